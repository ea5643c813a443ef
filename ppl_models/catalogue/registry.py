"""The families of the catalogue, one line each; ``ppl-models list`` prints them in this order."""

from __future__ import annotations

from .dae import DAEFamily
from .dbm import DBMFamily
from .dbn import DBNFamily
from .dcim import DCIMFamily
from .family import Family
from .fvbm import FVBMFamily
from .implicit import GANFamily, GMMNFamily
from .mixture import MixtureFamily
from .nade import FVSBNFamily, NADEFamily
from .rbm import GBRBMFamily, RBMFamily
from .sbn import SBNFamily
from .vae import IWAEFamily, VAEFamily

FAMILIES: dict[str, Family] = {f.name: f for f in (
    VAEFamily(),
    IWAEFamily(),
    DCIMFamily(),
    RBMFamily(),
    GBRBMFamily(),
    DBMFamily(),
    FVBMFamily(),
    DBNFamily(),
    MixtureFamily(),
    SBNFamily(),
    NADEFamily(), FVSBNFamily(),
    GANFamily(), GMMNFamily(),
    DAEFamily(),
)}
