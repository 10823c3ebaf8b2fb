from .checkpoint_io import load_trusted_checkpoint, load_weights_file

__all__ = ['load_trusted_checkpoint', 'load_weights_file']
