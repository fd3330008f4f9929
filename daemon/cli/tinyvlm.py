"""A tiny, randomly initialised Qwen2-VL with its tokenizer and image processor, built offline.

The multimodal tests and `llmtraind demo` need a vision-language model that ms-swift 4.6 trains,
merges and serves on a CPU without a hub. This builds the one `reference/cluster-multimodal-ops.md`
§7 verified: a 2-layer Qwen2-VL text model (hidden 64) with a 1-block vision tower (embed 32), seed-0
float32 weights, and a Qwen2VLProcessor whose image processor turns a 56x56 picture into 4 image
tokens.

The token ids are not free: swift's Qwen2-VL template hard-codes `<|image_pad|>` as 151655 and
`<|video_pad|>` as 151656, and a tokenizer with them elsewhere still trains (rc 0) but never expands
an image's placeholder. So the byte-level BPE (about 500 entries) is padded with filler entries up to
151642 and Qwen2's special tokens follow at their real ids, asserted below. With the same package
versions the build is byte-for-byte the same every time.

torch, transformers and tokenizers are imported inside `build_tiny_vlm` only, as in `tinymodel`; this
file also runs as a script under the interpreter that has ms-swift (`python daemon/cli/tinyvlm.py DEST`).
Training it needs `qwen-vl-utils` (and so torchvision) where swift runs: see the README.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

try:
    from daemon.cli.tinymodel import build_new_dir, import_untyped, script_main
except ImportError:  # run as a script by swift's interpreter, where the daemon is not installed
    from tinymodel import build_new_dir, import_untyped, script_main  # type: ignore[import-not-found,no-redef]

__all__ = ["IMAGE_PAD_ID", "SPECIAL_IDS", "build_tiny_vlm", "main"]

_FIRST_SPECIAL = 151643
_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
SPECIAL_IDS = {token: _FIRST_SPECIAL + i for i, token in enumerate(_SPECIALS)}
"""Qwen2's ids, which swift's qwen2_vl template relies on."""
IMAGE_PAD_ID = SPECIAL_IDS["<|image_pad|>"]
_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif item['type'] == 'video' or 'video' in item %}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif 'text' in item %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_PIXELS = {
    "min_pixels": 3136,
    "max_pixels": 12544,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
}
_SEED = 0
_CORPUS = [
    "What colour is the shape? The shape is red. A blue circle and a green square on a white ground.",
    "You are a helpful assistant. Describe the picture. There is a yellow triangle in the middle.",
    "1 2 3 4 5 6 7 8 9 0 + - * / = ( ) [ ] { } : ; , . ! ? \" ' \n\t",
] * 20


def build_tiny_vlm(dest: Path) -> Path:
    """Write the tiny VLM into the new directory `dest` (complete or absent, as `build_tiny_model`)."""
    return build_new_dir(dest, _write_model)


def _write_model(out: Path) -> None:
    torch = import_untyped("torch")
    transformers = import_untyped("transformers")
    tokenizer = _tokenizer()
    processor = transformers.Qwen2VLProcessor(
        image_processor=transformers.Qwen2VLImageProcessor(**_PIXELS),
        video_processor=transformers.Qwen2VLVideoProcessor(**_PIXELS),
        tokenizer=tokenizer,
        chat_template=_CHAT_TEMPLATE,
    )
    processor.save_pretrained(str(out))
    ids = SPECIAL_IDS
    text = transformers.models.qwen2_vl.configuration_qwen2_vl.Qwen2VLTextConfig(
        vocab_size=(len(tokenizer) + 63) // 64 * 64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        bos_token_id=None,
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision = transformers.models.qwen2_vl.configuration_qwen2_vl.Qwen2VLVisionConfig(
        depth=1,
        embed_dim=32,
        hidden_size=64,
        num_heads=2,
        mlp_ratio=2,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    config = transformers.Qwen2VLConfig(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = transformers.Qwen2VLForConditionalGeneration(config).to(torch.float32)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(str(out), safe_serialization=True)


def _tokenizer() -> Any:
    """A byte-level BPE padded to Qwen2's vocabulary size, then Qwen2's special tokens at their ids."""
    tokenizers = import_untyped("tokenizers")
    transformers = import_untyped("transformers")
    pre_tokenizers = tokenizers.pre_tokenizers
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=512, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    body = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(body["vocab"])
    for i in range(len(vocab), _FIRST_SPECIAL):
        vocab[f"<|filler_{i}|>"] = i
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in body["merges"]]
    tokenizer = transformers.Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token=None, pad_token=None
    )
    added = [tokenizers.AddedToken(token, special=True, normalized=False) for token in _SPECIALS]
    tokenizer.add_tokens(added, special_tokens=True)
    tokenizer.eos_token = _SPECIALS[2]
    tokenizer.pad_token = _SPECIALS[0]
    tokenizer.chat_template = _CHAT_TEMPLATE
    tokenizer.model_max_length = 4096
    for token, wanted in SPECIAL_IDS.items():
        got = tokenizer.convert_tokens_to_ids(token)
        if got != wanted:
            raise RuntimeError(
                f"{token} has id {got}, not {wanted}: swift's qwen2_vl template needs {wanted}"
            )
    return tokenizer


def main(argv: list[str] | None = None) -> int:
    """`python daemon/cli/tinyvlm.py DEST`: build the tiny VLM into DEST and print its path."""
    return script_main(argv, "tinyvlm.py", build_tiny_vlm)


if __name__ == "__main__":
    sys.exit(main())
