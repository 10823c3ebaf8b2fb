"""DeCLIP distillation: the distiller (student + teachers -> losses) and the teacher-target cache."""
from .declip_distiller import DeCLIPDistiller, DistillDataPreprocessor
from .teacher_cache import TeacherCache

__all__ = ['DeCLIPDistiller', 'DistillDataPreprocessor', 'TeacherCache']
