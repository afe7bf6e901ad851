"""The model: positional encodings (`positional`), attention kernels (`attention`), the T5-block
decoder (`decoder`), its KV cache (`kv_cache`) and greedy decoding (`decoding`)."""
