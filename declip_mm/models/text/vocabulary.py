"""Class vocabularies of models: class names (a list, a file or a bundled list, ``declip_mm/vocabularies/``) and their
text embeddings as buffers."""
import torch

from ...registry import MODELS
from ...vocabularies import CLASS_NAME_DIR, load_class_names  # noqa: F401  (bundled lists: declip_mm/vocabularies/)
from .text_encoder import ClassEmbeddings


class ClassVocabularyMixin:
    """For models that score features against class names: encodes them once at construction with a text
    encoder of the same open_clip model as the image tower, and keeps the embeddings as buffers."""

    def init_class_vocabulary(self, text_encoder, class_names, image_model_name: str) -> None:
        """``text_encoder``: an OpenCLIPTextEncoder config, or a built one (the user APIs keep theirs)."""
        text = text_encoder if isinstance(text_encoder, torch.nn.Module) else MODELS.build(text_encoder)
        if text.model_name != image_model_name:
            raise ValueError(f"text encoder '{text.model_name}' and backbone '{image_model_name}' must be the same "
                             'open_clip model (one joint embedding space)')
        self.class_names = load_class_names(class_names)
        classes = text(self.class_names)
        self.register_buffer('text_embeddings', classes.embeddings, persistent=False)
        self.register_buffer('text_class_index', classes.class_index, persistent=False)

    def set_class_vocabulary(self, classes: ClassEmbeddings) -> None:
        """Replace the vocabulary by already encoded classes (S synonym rows of K classes), e.g. a user's per-call
        vocabulary; the buffers stay on their device."""
        device = self.text_embeddings.device
        self.class_names = list(classes.names)
        self.text_embeddings = classes.embeddings.to(device)
        self.text_class_index = classes.class_index.to(device)

    @property
    def class_embeddings(self) -> ClassEmbeddings:
        return ClassEmbeddings(self.text_embeddings, self.text_class_index, self.class_names)
