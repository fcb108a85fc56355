"""Loss rules for learning from wrong labels and hard videos (paper III-A; SPEC section 4).

* :mod:`.agreement`: what the clips say (agreement, confidence, the vote) and the flags;
* :mod:`.registry`: :class:`LossRule`, :func:`register_strategy`, :func:`list_strategies`;
* the rules, one family per module: :mod:`.table_iv` (the paper's Table IV), :mod:`.flag_rules`
  (robust flag rules, issue 14), :mod:`.gce`, and the label-correcting :mod:`.elr`,
  :mod:`.correction` (``clip_correct``) and :mod:`.mixture`;
* :mod:`.criterion`: :class:`AgreementLoss`, the training criterion that runs a rule.
"""

from .agreement import (FLAG_NAMES, HARD, NOISY, ORDINARY, AgreementStats, agreement, agreement_stats, class_quantile,
                        flag_samples)
from .registry import (FlagOptions, LossRule, SampleView, UnknownStrategyError, create_strategy, is_strategy,
                       list_strategies, register_strategy)
from .table_iv import STRATEGIES  # registers Table IV's rules first
from . import gce, flag_rules  # noqa: E402,F401,I001  (registration, in this order)
from . import elr, correction, mixture  # noqa: E402,F401,I001  (registration, in this order)
from . import agreement_gmm, coteaching, dividemix  # noqa: E402,F401,I001  (registration, in this order)
from .criterion import AgreementLoss, flags_for_strategy
from .mixing import Mix, draw_mix, mix_inputs
from .mixture import class_clean_probability, gmm_clean_probability, sharpen
from .agreement_gmm import class_group_probability, three_group_probability
from .pair import PairLoss

# Beyond the paper: the robust rules of issue 14 (flags, or a bounded loss) and the
# label-correcting rules of issue 23 (targets instead of weights).
ROBUST_STRATEGIES = ("gce", "class_small_loss", "vote_small_loss", "hard_disagree", "consensus", "clip_vote")
CORRECTING_STRATEGIES = ("elr", "clip_correct", "mixture")
# Issue 34: a learnt clean / hard / noisy split, and the two-network rules.
SPLIT_STRATEGIES = ("agreement_gmm",)
TWO_NETWORK_STRATEGIES = ("coteaching", "dividemix")
#: The built-in rules (user-registered ones are in :func:`list_strategies`).
ALL_STRATEGIES = STRATEGIES + ROBUST_STRATEGIES + CORRECTING_STRATEGIES + SPLIT_STRATEGIES + TWO_NETWORK_STRATEGIES

__all__ = [
    "ORDINARY", "HARD", "NOISY", "FLAG_NAMES", "STRATEGIES", "ROBUST_STRATEGIES", "CORRECTING_STRATEGIES",
    "SPLIT_STRATEGIES", "TWO_NETWORK_STRATEGIES", "ALL_STRATEGIES", "AgreementStats", "agreement", "agreement_stats", "flag_samples", "class_quantile",
    "flags_for_strategy", "AgreementLoss", "LossRule", "SampleView", "FlagOptions", "register_strategy",
    "list_strategies", "create_strategy", "is_strategy", "UnknownStrategyError", "gmm_clean_probability",
    "class_clean_probability", "sharpen", "PairLoss", "Mix", "draw_mix", "mix_inputs", "class_group_probability",
    "three_group_probability",
]
