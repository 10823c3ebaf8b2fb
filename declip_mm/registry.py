"""The ``declip_mm`` registry scope.

Every registry here is a child of mmengine's root registry with scope ``declip_mm``, so configs with
``default_scope='declip_mm'`` build our modules, and ``'declip_mm.Name'`` reaches them from any scope.

mmdet and mmseg configs use bare names (``type='DeCLIPViT'``) under their own default scope. mmengine
resolves a bare name in the current scope and then in its ancestors, never in sibling scopes, so each
module registered here is also recorded in the root registry (the common ancestor of mmdet, mmseg and
declip_mm). With ``custom_imports = dict(imports=['declip_mm'])`` a bare name then works everywhere.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry


class SharedRegistry(Registry):
    """A ``declip_mm`` registry whose modules are also visible, by bare name, from mmdet and mmseg."""

    def _register_module(self, module, module_name=None, force=False):
        super()._register_module(module, module_name, force)
        self.parent._register_module(module, module_name, force)


MODELS = SharedRegistry('model', parent=MMENGINE_MODELS, scope='declip_mm', locations=['declip_mm.models'])
DATASETS = SharedRegistry('dataset', parent=MMENGINE_DATASETS, scope='declip_mm',
                          locations=['declip_mm.datasets'])
TRANSFORMS = SharedRegistry('transform', parent=MMENGINE_TRANSFORMS, scope='declip_mm',
                            locations=['declip_mm.datasets.transforms'])
METRICS = SharedRegistry('metric', parent=MMENGINE_METRICS, scope='declip_mm', locations=['declip_mm.evaluation'])
HOOKS = SharedRegistry('hook', parent=MMENGINE_HOOKS, scope='declip_mm', locations=['declip_mm.engine.hooks'])
FUNCTIONS = SharedRegistry('function', parent=MMENGINE_FUNCTIONS, scope='declip_mm', locations=['declip_mm.datasets'])
