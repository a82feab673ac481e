"""Fine-tuning data: the released conversation format (JSONL) prepared into shards (`jobs.prepare_sft`)."""
