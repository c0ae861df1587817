"""Corpora, tokenizers, token shards and the deterministic batch loader."""
