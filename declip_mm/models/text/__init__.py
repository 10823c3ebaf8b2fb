"""Class-name text embeddings (templates, synonyms, cache)."""
from .text_encoder import TEMPLATE_SETS, ClassEmbeddings, CLIPTextEncoder, split_synonyms

__all__ = ['CLIPTextEncoder', 'ClassEmbeddings', 'TEMPLATE_SETS', 'split_synonyms']
