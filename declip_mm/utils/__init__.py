from .checkpoint_io import (CheckpointError, UntrustedCheckpointError, load_checkpoint, load_trusted_checkpoint,
                            load_weights_file)

__all__ = ['CheckpointError', 'UntrustedCheckpointError', 'load_checkpoint', 'load_trusted_checkpoint',
           'load_weights_file']
