"""A tiny, randomly initialised Qwen2 model with its own tokenizer, built offline in seconds.

`llmtraind demo` and the tests need a model that ms-swift trains on a CPU in well under a second a
step, without any hub. This builds one the way `reference/swift-cpu.md` §9 (`build_tiny.py`)
measured it: a byte-level BPE trained on a fixed corpus, wrapped as a real `Qwen2Tokenizer`, and
a 2-layer Qwen2 (about 103k parameters, 444 KiB) with seed-0 weights in float32. With the same
package versions the result is byte-for-byte identical on every build, so it never needs to be
committed or downloaded.

torch, transformers and tokenizers are imported inside `build_tiny_model` only: the daemon itself
does not depend on them, and this file also runs as a script under the interpreter that has
ms-swift (`python daemon/cli/tinymodel.py DEST`).
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["build_new_dir", "build_tiny_model", "import_untyped", "main", "script_main"]

_PAD, _START, _EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
_SPECIAL = (_PAD, _START, _EOS)
_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML, as Qwen2 models ship it; swift renders the same layout with its own `qwen` template."""
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "You are a helpful assistant. What is the capital of France? Paris is the capital of France.",
    "system user assistant hello world training data for a tiny model",
    "1 2 3 4 5 6 7 8 9 0 + - * / = ( ) [ ] { } : ; , . ! ? \" ' \n\t",
] * 20
_SEED = 0


def build_tiny_model(dest: Path) -> Path:
    """Write the tiny model and tokenizer into the new directory `dest` and return `dest`.

    Complete or absent even if the build is interrupted; FileExistsError if `dest` exists (see
    `build_new_dir`).
    """
    return build_new_dir(dest, _write_model)


def build_new_dir(dest: Path, write: Callable[[Path], None]) -> Path:
    """Have `write` fill a temporary sibling of `dest`, then rename it into place and return `dest`.

    So `dest` either does not exist or holds a complete model, even if the build is interrupted.
    Raises FileExistsError if `dest` exists.
    """
    dest = Path(dest).absolute()
    if dest.exists():
        raise FileExistsError(f"{dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.tmp"
    work.mkdir()  # not mkdtemp: the model directory gets the usual umask permissions, not 0700
    try:
        write(work)
        os.replace(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return dest


def import_untyped(name: str) -> Any:
    """Import lazily, untyped: transformers' annotations reject what its 5.x runtime accepts
    (merges as tuples, unk_token None), and the daemon must start without these packages."""
    return importlib.import_module(name)


def _write_model(out: Path) -> None:
    torch = import_untyped("torch")
    transformers = import_untyped("transformers")
    tokenizer = _tokenizer()
    tokenizer.save_pretrained(str(out))
    eos = tokenizer.convert_tokens_to_ids(_EOS)
    pad = tokenizer.convert_tokens_to_ids(_PAD)
    config = transformers.Qwen2Config(
        vocab_size=(len(tokenizer) + 63) // 64 * 64,  # a multiple of 64, as real models pad it
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    # Seed a forked generator: the weights are the same on every build, and the caller's random
    # state (a test's, the daemon's) is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = transformers.Qwen2ForCausalLM(config).to(torch.float32)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    model.save_pretrained(str(out), safe_serialization=True)


def _tokenizer() -> Any:
    """A byte-level BPE trained on `_CORPUS`: every byte is in its alphabet, so there is no <unk>."""
    tokenizers = import_untyped("tokenizers")
    pre_tokenizers = tokenizers.pre_tokenizers
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=list(_SPECIAL),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    body = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in body["merges"]]
    tokenizer = import_untyped("transformers").Qwen2Tokenizer(
        vocab=body["vocab"], merges=merges, unk_token=None, bos_token=None, eos_token=_EOS, pad_token=_PAD
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [_START, _EOS]})
    tokenizer.chat_template = _CHAT_TEMPLATE
    tokenizer.model_max_length = 2048
    return tokenizer


def main(argv: list[str] | None = None) -> int:
    """`python daemon/cli/tinymodel.py DEST`: build the model into DEST and print its path."""
    return script_main(argv, "tinymodel.py", build_tiny_model)


def script_main(argv: list[str] | None, script: str, build: Callable[[Path], Path]) -> int:
    """The command line both builders share: `python SCRIPT DEST` builds into DEST and prints its path."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: {script} DEST", file=sys.stderr)
        return 2
    try:
        print(build(Path(args[0])))
    except FileExistsError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
