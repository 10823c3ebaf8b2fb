"""The ``declip_mm`` registry scope.

Every registry here is a child of mmengine's root registry with scope ``declip_mm``, so configs with
``default_scope='declip_mm'`` build our modules (and mmengine's, found through the parent), and
``'declip_mm.Name'`` reaches them from any scope.

mmdet and mmseg configs use bare names (``type='DeCLIPViT'``) under their own default scope. mmengine
resolves a bare name in the current scope and then in its ancestors, never in sibling scopes, so each
module registered in a :class:`SharedRegistry` is also recorded in the root registry (the common ancestor
of mmdet, mmseg and declip_mm). With ``custom_imports = dict(imports=['declip_mm'])`` a bare name then
works everywhere.
"""
from mmengine import registry as root
from mmengine.registry import Registry


class SharedRegistry(Registry):
    """A ``declip_mm`` registry whose modules are also visible, by bare name, from mmdet and mmseg."""

    def _register_module(self, module, module_name=None, force=False):
        super()._register_module(module, module_name, force)
        self.parent._register_module(module, module_name, force)


def _child(parent, cls=Registry, locations=()):
    return cls(parent.name, parent=parent, scope='declip_mm', locations=list(locations))


# registries declip_mm registers modules into
MODELS = _child(root.MODELS, SharedRegistry, ['declip_mm.models'])
DATASETS = _child(root.DATASETS, SharedRegistry, ['declip_mm.datasets'])
TRANSFORMS = _child(root.TRANSFORMS, SharedRegistry, ['declip_mm.datasets.transforms'])
METRICS = _child(root.METRICS, SharedRegistry, ['declip_mm.evaluation'])
HOOKS = _child(root.HOOKS, SharedRegistry, ['declip_mm.engine.hooks'])
FUNCTIONS = _child(root.FUNCTIONS, SharedRegistry, ['declip_mm.datasets'])
PARAM_SCHEDULERS = _child(root.PARAM_SCHEDULERS, SharedRegistry, ['declip_mm.engine.schedulers'])

# the rest of mmengine's registries, so that building under scope 'declip_mm' finds mmengine's modules quietly
RUNNERS = _child(root.RUNNERS)
RUNNER_CONSTRUCTORS = _child(root.RUNNER_CONSTRUCTORS)
LOOPS = _child(root.LOOPS)
STRATEGIES = _child(root.STRATEGIES)
DATA_SAMPLERS = _child(root.DATA_SAMPLERS)
MODEL_WRAPPERS = _child(root.MODEL_WRAPPERS)
WEIGHT_INITIALIZERS = _child(root.WEIGHT_INITIALIZERS)
OPTIMIZERS = _child(root.OPTIMIZERS)
OPTIM_WRAPPERS = _child(root.OPTIM_WRAPPERS)
OPTIM_WRAPPER_CONSTRUCTORS = _child(root.OPTIM_WRAPPER_CONSTRUCTORS)
EVALUATOR = _child(root.EVALUATOR)
TASK_UTILS = _child(root.TASK_UTILS)
VISUALIZERS = _child(root.VISUALIZERS)
VISBACKENDS = _child(root.VISBACKENDS)
LOG_PROCESSORS = _child(root.LOG_PROCESSORS)
INFERENCERS = _child(root.INFERENCERS)
