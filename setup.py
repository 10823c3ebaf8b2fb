"""declip-mm: DeCLIP decoupled CLIP dense features as an OpenMMLab extension package."""
from setuptools import find_packages, setup


def read_requirements(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith('#')]


setup(
    name='declip_mm',
    version='0.1.0',
    description='DeCLIP (decoupled CLIP dense features) for mmdet / mmseg / mmengine',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['declip_mm', 'declip_mm.*']),
    include_package_data=True,
    package_data={'declip_mm': ['models/model_configs/*.json', 'vocabularies/class_names/*.txt',
                             'vocabularies/catseg/*.json']},
    python_requires='>=3.10',
    install_requires=read_requirements('requirements/runtime.txt'),
    extras_require={'tests': read_requirements('requirements/tests.txt')},
    entry_points={'console_scripts': ['declip-mm = declip_mm.cli:main']},
    license='Apache-2.0',
)
