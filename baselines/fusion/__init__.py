"""Fusion baselines. Importing this package registers every method module in it."""
from fusionbench.methods import import_method_modules

import_method_modules(__name__, __path__)
