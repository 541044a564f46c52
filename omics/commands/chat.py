"""`omics chat --model DIR`: an interactive session, answers streamed token by token.

Type a question (sequences inside <dna>…<dna> tags, as in training); `/reset` forgets the conversation,
`/exit` or end of input quits.
"""

from __future__ import annotations

from argparse import Namespace


def run(args: Namespace) -> None:
    import torch
    from transformers import TextStreamer

    from omics.model import end_of_turn_id, load_model, load_tokenizer, require_model_dir
    from omics.model_card import read_card

    model_dir = require_model_dir(args.model, "Pass the directory of a trained model (e.g. archive/models/stage2).")
    tokenizer = load_tokenizer(model_dir, chat=True)
    model = load_model(model_dir, dtype=args.dtype).eval()
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    messages = [{"role": "system", "content": args.system or read_card(model_dir).default_prompt}]
    print("omics chat: /reset to start over, /exit to quit")
    while True:
        try:
            question = input("you> ").strip()
        except EOFError:
            break
        if question in ("/exit", "/quit"):
            break
        if question == "/reset":
            del messages[1:]
            continue
        if not question:
            continue
        messages.append({"role": "user", "content": question})
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)["input_ids"].to(model.device)
        print("omics> ", end="", flush=True)
        with torch.no_grad():
            output = model.generate(input_ids=ids, max_new_tokens=args.max_new_tokens, do_sample=False,
                                    eos_token_id=[end_of_turn_id(tokenizer), tokenizer.eos_token_id],
                                    pad_token_id=tokenizer.pad_token_id, streamer=streamer)
        answer = tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True).strip()
        messages.append({"role": "assistant", "content": answer})
