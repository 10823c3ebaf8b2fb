"""Prompt sets for class-name text embeddings.

* ``'imagenet80'``: open_clip's 80 OpenAI ImageNet templates (the training-free segmentation protocol).
* ``'vild'``: the 63 ViLD-style templates of CLIPSelf / DeCLIP's ``tools/generate_text_embeddings.py``
  (region classification, F-ViT), with their two rules: ``{article}`` is 'an' when the raw name starts with a
  lower-case vowel, else 'a'; every prompt that starts with 'a' or 'the' gets the prefix 'This is '. The name
  is lower-cased, '_' becomes a space, '/' becomes ' or ', a trailing '.' is dropped; nothing else
  (COCO panoptic's '-merged' / '-other' / '-stuff' stay).
* ``'simple'``: open_clip's 7 simple templates; ``'none'``: the bare name.
"""
from typing import Callable, Dict, List, Tuple

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

VILD_TEMPLATES: Tuple[str, ...] = (
    'There is {article} {} in the scene.',
    'There is the {} in the scene.',
    'a photo of {article} {} in the scene.',
    'a photo of the {} in the scene.',
    'a photo of one {} in the scene.',
    'itap of {article} {}.',
    'itap of my {}.',
    'itap of the {}.',
    'a photo of {article} {}.',
    'a photo of my {}.',
    'a photo of the {}.',
    'a photo of one {}.',
    'a photo of many {}.',
    'a good photo of {article} {}.',
    'a good photo of the {}.',
    'a bad photo of {article} {}.',
    'a bad photo of the {}.',
    'a photo of a nice {}.',
    'a photo of the nice {}.',
    'a photo of a cool {}.',
    'a photo of the cool {}.',
    'a photo of a weird {}.',
    'a photo of the weird {}.',
    'a photo of a small {}.',
    'a photo of the small {}.',
    'a photo of a large {}.',
    'a photo of the large {}.',
    'a photo of a clean {}.',
    'a photo of the clean {}.',
    'a photo of a dirty {}.',
    'a photo of the dirty {}.',
    'a bright photo of {article} {}.',
    'a bright photo of the {}.',
    'a dark photo of {article} {}.',
    'a dark photo of the {}.',
    'a photo of a hard to see {}.',
    'a photo of the hard to see {}.',
    'a low resolution photo of {article} {}.',
    'a low resolution photo of the {}.',
    'a cropped photo of {article} {}.',
    'a cropped photo of the {}.',
    'a close-up photo of {article} {}.',
    'a close-up photo of the {}.',
    'a jpeg corrupted photo of {article} {}.',
    'a jpeg corrupted photo of the {}.',
    'a blurry photo of {article} {}.',
    'a blurry photo of the {}.',
    'a pixelated photo of {article} {}.',
    'a pixelated photo of the {}.',
    'a black and white photo of the {}.',
    'a black and white photo of {article} {}.',
    'a plastic {}.',
    'the plastic {}.',
    'a toy {}.',
    'the toy {}.',
    'a plushie {}.',
    'the plushie {}.',
    'a cartoon {}.',
    'the cartoon {}.',
    'an embroidered {}.',
    'the embroidered {}.',
    'a painting of the {}.',
    'a painting of a {}.',
)


def vild_name(name: str) -> str:
    """CLIPSelf / DeCLIP's ``processed_name(rm_dot=True)``."""
    return name.replace('_', ' ').replace('/', ' or ').lower().rstrip('.')


def vild_prompts(name: str) -> List[str]:
    """The 63 ViLD-style prompts for one class name (article from the raw name, 'This is ' prefix)."""
    article = 'an' if name[:1] in ('a', 'e', 'i', 'o', 'u') else 'a'
    prompts = [t.format(vild_name(name), article=article) for t in VILD_TEMPLATES]
    return ['This is ' + p if p.startswith(('a', 'the')) else p for p in prompts]


def template_formatter(templates: Tuple[str, ...]) -> Callable[[str], List[str]]:
    return lambda name: [t.format(name) for t in templates]


TEMPLATE_SETS: Dict[str, Tuple[str, ...]] = {
    'imagenet80': tuple(t('{}') for t in OPENAI_IMAGENET_TEMPLATES),
    'vild': VILD_TEMPLATES,
    'simple': tuple(t('{}') for t in SIMPLE_IMAGENET_TEMPLATES),
    'none': ('{}',),
}
PROMPT_BUILDERS: Dict[str, Callable[[str], List[str]]] = {
    name: vild_prompts if name == 'vild' else template_formatter(templates) for name, templates in TEMPLATE_SETS.items()}
