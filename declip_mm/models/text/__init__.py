"""Class-name text embeddings (templates, synonyms, cache)."""
from .text_encoder import TEMPLATE_SETS, ClassEmbeddings, OpenCLIPTextEncoder, split_synonyms

__all__ = ['OpenCLIPTextEncoder', 'ClassEmbeddings', 'TEMPLATE_SETS', 'split_synonyms']
