"""The job examples of the two original designs (../shared/seeds/), verbatim: the job parser must
accept each as written, and the command builder has a golden command line for each."""

from __future__ import annotations

SEED_SFT = """\
task_type: sft
model_name: qwen-7b
dataset: datasets/sft_dataset.jsonl
max_seq_length: 2048
per_device_train_batch_size: 4
learning_rate: 2e-5
num_train_epochs: 3
"""
SEED_RL = """\
task_type: rl
algorithm: ppo
policy_model: qwen-7b-sft
reward_model: qwen-7b-rm
dataset: datasets/rl_preference.jsonl
rollout_batch_size: 16
update_epochs: 4
kl_target: 0.1
"""
SEED_LORA = """\
task_type: lora
base_model: llama2-7b
dataset: datasets/lora_demo.jsonl
lora_r: 8
lora_alpha: 16
lora_dropout: 0.05
train_batch_size: 64
gradient_accumulation_steps: 4
use_8bit: true
"""
SEED_PRETRAIN = """\
task_type: pretrain
model_name: llama2-7b
dataset: datasets/pretrain_corpus.jsonl
sequence_length: 4096
global_batch_size: 1024
learning_rate: 3e-4
warmup_ratio: 0.01
tokenizer: configs/tokenizer.model
"""
SEED_TRAINER_JSON = """\
{
    "gpu_id": "0",
    "datasets": [
        "AI-ModelScope/alpaca-gpt4-data-zh#500",
        "AI-ModelScope/alpaca-gpt4-data-en#500"
    ],
    "model_path": "Qwen/Qwen2.5-7B-Instruct",
    "output_dir": "output/llm_test",
    "num_epochs": 1,
    "batch_size": 1,
    "learning_rate": 1e-4,
    "lora_rank": 8,
    "lora_alpha": 32,
    "target_modules": "all-linear",
    "gradient_accumulation_steps": 16,
    "eval_steps": 50,
    "save_steps": 50,
    "save_total_limit": 2,
    "logging_steps": 5,
    "max_length": 2048,
    "warmup_ratio": 0.05,
    "dataloader_num_workers": 4,
    "torch_dtype": "bfloat16",
    "system": "You are a helpful assistant.",
    "model_author": "swift",
    "model_name": "swift-robot"
}
"""
SEED_RL_DATA = """\
{"prompt": "请写一首短诗", "chosen": "春风拂面...", "rejected": "我不知道", "metadata": {"source": "beta-feedback"}}
{"prompt": "翻译：Hello", "responses": [{"content": "你好", "score": 0.9}, {"content": "您好", "score": 0.7}]}
"""
"""The management API's RL preference file: a pair row and a scored-responses row, shown together
(its code block is indented two spaces as a list item's; the file's lines are not)."""

SEED_SFT_DATA = """\
{"conversation_id": "demo-001", "messages": [{"role": "user", "content": "指令"}, {"role": "assistant", "content": "回答"}], "task_tags": ["qa"], "metadata": {"language": "zh"}}
{"conversation_id": "demo-002", "messages": [{"role": "user", "content": "请总结"}, {"role": "assistant", "content": "总结内容"}]}
"""
"""The management API's SFT dataset example, as its document shows it (less the list item's indent)."""
SEED_LORA_DATA = """\
{"conversation_id": "lora-001", "messages": [{"role": "user", "content": "写一封感谢信"}, {"role": "assistant", "content": "亲爱的团队..."}], "target_modules": ["q_proj", "v_proj"], "rank": 8}
"""
SEED_PRETRAIN_DATA = """\
{"doc_id": "pt-0001", "text": "大模型预训练语料第一段...", "metadata": {"domain": "finance"}}
{"doc_id": "pt-0002", "text": "第二段语料..."}
"""
SEED_DATASETS = {
    "sft_dataset.jsonl": SEED_SFT_DATA,
    "rl_preference.jsonl": SEED_RL_DATA,
    "lora_demo.jsonl": SEED_LORA_DATA,
    "pretrain_corpus.jsonl": SEED_PRETRAIN_DATA,
}
"""Each dataset example under the file name the seed jobs give it (`dataset: datasets/NAME.jsonl`)."""
