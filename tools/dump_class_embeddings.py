"""Write the class-embedding file of an open-vocabulary head (F-ViT) from any open_clip model.

    python tools/dump_class_embeddings.py OUT.pt --model-name EVA02-B-16 --pretrained merged2b_s8b_b131k \
        --classes ov_coco_65            # or coco_80, lvis_v1, a file (one class per line), or a dataset json
    python tools/dump_class_embeddings.py OUT.pt ... --classes data/coco/zero-shot/instances_val2017_all_2.json

Names in dataset label order (a COCO/LVIS json: its categories sorted by id, the annotation file's own names, as
CLIPSelf's ``F-ViT/tools/dump_{lvis,coco}_openclip_feature.py``; 'lvis_v1' is the same official list), then
'background'; each name embedded with the 63 ViLD-style prompts (article rule, 'This is ' prefix, '_' -> space,
'/' -> ' or '), the normalised prompt embeddings averaged and normalised (CLIPSelf ``F-ViT/tools/clip_utils.py``).
Since DeCLIP keeps the text tower frozen, use the ORIGINAL CLIP weights (the same file serves every DeCLIP backbone
of the model).

The file: ``{'names': [K names, 'background'], 'embeddings': (K + 1, D) float32 L2-normalised, 'model_name',
'pretrained', 'templates', 'classes_from'}`` (CLIPSelf's files, a dict name -> (D,) vector, load too). The head
checks the names and their order against its ``class_names`` when it loads the file; this tool loads what it wrote
the same way before it returns.
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's declip_mm, whatever is installed
import argparse
import json

import torch

import declip_mm  # noqa: F401
from declip_mm.datasets.ov_detection import class_names_from
from declip_mm.models.detectors.fvit_heads import check_class_embedding_names
from declip_mm.models.text.embedding_file import BACKGROUND, load_class_embeddings, save_class_embeddings
from declip_mm.registry import MODELS


def dump(out: str, model_name: str, pretrained, classes, batch_size: int = 256) -> list:
    names = class_names_from(classes)
    if BACKGROUND in names:
        raise ValueError(f"'{BACKGROUND}' is a class of {classes}; it is appended by this tool")
    encoder = MODELS.build(dict(type='OpenCLIPTextEncoder', model_name=model_name, pretrained=pretrained,
                                templates='vild', batch_size=batch_size, embedding_cache=False))
    with torch.no_grad():
        embeddings = encoder.embed_synonyms(names + [BACKGROUND])
    save_class_embeddings(out, names + [BACKGROUND], embeddings, model_name=model_name, pretrained=pretrained,
                          templates='vild', classes_from=classes if isinstance(classes, str) else None)
    check_class_embedding_names(out, names, f"--classes '{classes}'")
    load_class_embeddings(out, names)
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out')
    parser.add_argument('--model-name', required=True, help='open_clip model, e.g. EVA02-B-16')
    parser.add_argument('--pretrained', default=None, help='the ORIGINAL CLIP weights (tag or file); required '
                        'unless --random')
    parser.add_argument('--random', action='store_true', help='a randomly initialised text tower (tests only)')
    parser.add_argument('--classes', required=True,
                        help="'ov_coco_65', 'coco_80', 'lvis_v1' (official LVIS v1 names), a COCO/LVIS annotation "
                        'json (its categories by id: preferred), or a text file with one class per line')
    args = parser.parse_args(argv)
    if (args.pretrained is None) != args.random:
        parser.error('give the original CLIP weights with --pretrained (or --random for a random text tower)')
    names = dump(args.out, args.model_name, args.pretrained, args.classes)
    print(json.dumps(dict(out=args.out, classes=len(names), first=names[:3], background_last=True)))


if __name__ == '__main__':
    main()
