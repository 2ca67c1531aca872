"""BibTeX of popdyn and of the papers behind its models (printed by ``popdyn --cite``).

Bibliographic details are those that could be checked against the arXiv/venue pages;
page ranges are given only where they were verified.
"""

from __future__ import annotations

__all__ = ["BIBTEX", "bibtex"]

BIBTEX = {
    "popdyn": """@software{popdyn,
  title   = {popdyn: population dynamics of feature learning},
  author  = {{popdyn developers}},
  year    = {2026},
  version = {0.1.0}
}""",
    "2411.08798": """@inproceedings{simsek2025multiindex,
  title     = {Learning Gaussian Multi-Index Models with Gradient Flow: Time Complexity and Directional Convergence},
  author    = {{\\c{S}}im{\\c{s}}ek, Berfin and Bendjeddou, Amire and Hsu, Daniel},
  booktitle = {Proceedings of The 28th International Conference on Artificial Intelligence and Statistics (AISTATS)},
  series    = {Proceedings of Machine Learning Research},
  volume    = {258},
  pages     = {4204--4212},
  year      = {2025},
  eprint    = {2411.08798},
  archivePrefix = {arXiv}
}""",
    "2406.01581": """@inproceedings{lee2024batchreuse,
  title     = {Neural network learns low-dimensional polynomials with {SGD} near the information-theoretic limit},
  author    = {Lee, Jason D. and Oko, Kazusato and Suzuki, Taiji and Wu, Denny},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2024},
  eprint    = {2406.01581},
  archivePrefix = {arXiv}
}""",
    "2309.03843": """@inproceedings{mousavihosseini2023spiked,
  title     = {Gradient-Based Feature Learning under Structured Data},
  author    = {Mousavi-Hosseini, Alireza and Wu, Denny and Suzuki, Taiji and Erdogdu, Murat A.},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2023},
  eprint    = {2309.03843},
  archivePrefix = {arXiv}
}""",
    "2311.13774": """@inproceedings{wang2024hierarchical,
  title     = {Learning Hierarchical Polynomials with Three-Layer Neural Networks},
  author    = {Wang, Zihao and Nichani, Eshaan and Lee, Jason D.},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2024},
  eprint    = {2311.13774},
  archivePrefix = {arXiv}
}""",
    "2406.11828": """@inproceedings{oko2024diverse,
  title     = {Learning sum of diverse features: computational hardness and efficient gradient-based training for ridge combinations},
  author    = {Oko, Kazusato and Song, Yujin and Suzuki, Taiji and Wu, Denny},
  booktitle = {Proceedings of Thirty Seventh Conference on Learning Theory (COLT)},
  series    = {Proceedings of Machine Learning Research},
  volume    = {247},
  pages     = {4009--4081},
  year      = {2024},
  eprint    = {2406.11828},
  archivePrefix = {arXiv}
}""",
    "2003.10409": """@article{benarous2021online,
  title   = {Online stochastic gradient descent on non-convex losses from high-dimensional inference},
  author  = {Ben Arous, G{\\'e}rard and Gheissari, Reza and Jagannath, Aukosh},
  journal = {Journal of Machine Learning Research},
  volume  = {22},
  number  = {106},
  pages   = {1--51},
  year    = {2021},
  eprint  = {2003.10409},
  archivePrefix = {arXiv}
}""",
    "2403.05529": """@inproceedings{damian2024generative,
  title     = {Computational-Statistical Gaps in {G}aussian Single-Index Models},
  author    = {Damian, Alex and Pillaud-Vivien, Loucas and Lee, Jason D. and Bruna, Joan},
  booktitle = {Proceedings of Thirty Seventh Conference on Learning Theory (COLT)},
  year      = {2024},
  eprint    = {2403.05529},
  archivePrefix = {arXiv}
}""",
}

#: Papers behind the CLI commands that are not model verbs (the model verbs and ``verify`` cite
#: the papers their registries name: ``popdyn.cli._command_papers``).
COMMAND_PAPERS = {
    "hermite": ["2403.05529"],
    "activations": [],
}


def _entry(key: str) -> str:
    """The BibTeX entry of ``key``; an arXiv id without a checked entry gets a minimal one."""
    if key in BIBTEX:
        return BIBTEX[key]
    return f"@misc{{arxiv{key.replace('.', '')},\n  eprint        = {{{key}}},\n  archivePrefix = {{arXiv}}\n}}"


def bibtex(keys=None) -> str:
    """BibTeX for popdyn plus ``keys`` (all entries when ``keys`` is None)."""
    keys = list(BIBTEX) if keys is None else ["popdyn"] + [k for k in dict.fromkeys(keys) if k != "popdyn"]
    return "\n\n".join(_entry(k) for k in keys) + "\n"
