"""Class-name text embeddings (templates, synonyms, cache)."""
from .text_encoder import TEMPLATE_SETS, ClassEmbeddings, OpenCLIPTextEncoder, split_synonyms
from .vocabulary import ClassVocabularyMixin, load_class_names

__all__ = ['OpenCLIPTextEncoder', 'ClassEmbeddings', 'TEMPLATE_SETS', 'split_synonyms', 'ClassVocabularyMixin',
           'load_class_names']
