"""Class-name text embeddings (templates, synonyms, cache)."""
