"""`omics serve`: an OpenAI-compatible API for a model folder, by vLLM's server or the built-in one.

`chat_format` decides what every request is prompted with (both backends alike), `vllm_server` builds vLLM's
command line, `engine` is the built-in server's batching generation worker and `api` its HTTP endpoints.
"""
