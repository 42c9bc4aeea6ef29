"""intradist: intra-distillation and parameter-sensitivity analysis for PyTorch (fairseq plugin included)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def pinned_requirements() -> list:
    """The exact pins of requirements.txt (the one list that scripts/setup.sh installs)."""
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="intradist",
    version="0.1.0",
    description=__doc__,
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires="==3.11.*",
    packages=find_packages(include=["user_dir", "user_dir.*", "intradist", "intradist.*", "analysis", "analysis.*"]),
    install_requires=pinned_requirements(),
    entry_points={
        "console_scripts": [
            "intradist-quickstart=intradist.studies.quickstart:main",
            "intradist-prepare-translation=intradist.cli:prepare_translation",
            "intradist-prepare-iwslt14=intradist.prepare.iwslt14:main",
            "intradist-evaluate-translation=intradist.cli:evaluate_translation",
            "intradist-self-distill=intradist.recipes.self_distill:main",
            "intradist-fairseq-flags=intradist.cli:fairseq_flags",
            "intradist-cpu-study=intradist.studies.cpu_study:main",
            "intradist-train-translation=intradist.recipes.translation:main",
            "intradist-evaluate-run=intradist.recipes.translation:evaluate_main",
            "intradist-results-table=intradist.results:main",
            "analyze-sensitivity=analysis.cli:main",
            "train-glue=intradist.trainers.glue:main",
            "train-vision=intradist.trainers.vision:main",
            "train-xtreme=intradist.trainers.xtreme:main",
            "intradist-prepare-xtreme=intradist.prepare.xtreme:main",
            "intradist-balance-study=intradist.studies.balance:main",
        ]
    },
)
