"""`omics vocab build`: a sequence vocabulary appended to Llama-3's byte-level BPE, and the base model resized to it.

Merges are learned on the user's sequences as Llama-3 already splits them and appended after all of its own
merges: they fire only where the original merges are exhausted, so ordinary text keeps its ids (the report
lists the all-capitals words that would change, and the merges that would change the common ones are left out).
"""
