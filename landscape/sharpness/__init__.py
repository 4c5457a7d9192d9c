"""Sharpness and flatness measures beside the Hessian spectrum.

One module per measure, all on any ``nn.Module`` + ``criterion(outputs, targets)``
+ iterable of ``(inputs, targets)`` batches, in eval mode by default, the model
left bit-identical:

- :mod:`.keskar`: Keskar et al. (2017) epsilon-sharpness phi(eps, A);
- :mod:`.adaptive`: worst-case adaptive m-sharpness by Auto-PGD (l_inf, l2);
- :mod:`.average`: average-case adaptive sharpness with a Monte Carlo SE;
- :mod:`.pacbayes`: magnitude-aware PAC-Bayes flatness 1/sigma'^2 (Jiang et al. 2020);
- :mod:`.noise_scale`: gradient noise scale B_simple (McCandlish et al. 2018);
- :mod:`.suite`: run them all, store each part in the analysis HDF5, resume, load;
- :mod:`.objective`: the shared functional loss/gradient at ``w + delta``.
"""
from landscape.sharpness.adaptive import (
                          RHO_L2,
                          RHO_LINF,
                          AdaptiveConfig,
                          AdaptiveResult,
                          adaptive_sharpness,
                          apgd_checkpoints,
)
from landscape.sharpness.average import RHO_AVERAGE, AverageConfig, AverageResult, average_sharpness
from landscape.sharpness.keskar import (
                          KESKAR_EPS,
                          KESKAR_SUBSPACE_DIM,
                          KeskarConfig,
                          KeskarResult,
                          keskar_phi,
                          keskar_sharpness,
)
from landscape.sharpness.noise_scale import (
                          ExactNoiseScale,
                          NoiseScaleResult,
                          exact_noise_scale,
                          gradient_noise_scale,
                          noise_estimators,
)
from landscape.sharpness.pacbayes import PacBayesConfig, PacBayesResult, pacbayes_flatness
from landscape.sharpness.suite import (
                          MEASURES,
                          NoiseConfig,
                          Part,
                          SharpnessSuite,
                          analyze_sharpness,
                          load_sharpness,
                          plan_parts,
                          summary_rows,
)

__all__ = [
    "KESKAR_EPS", "KESKAR_SUBSPACE_DIM", "MEASURES", "RHO_AVERAGE", "RHO_L2", "RHO_LINF",
    "AdaptiveConfig", "AdaptiveResult", "AverageConfig", "AverageResult", "ExactNoiseScale", "KeskarConfig",
    "KeskarResult", "NoiseConfig", "NoiseScaleResult", "PacBayesConfig", "PacBayesResult", "Part", "SharpnessSuite",
    "adaptive_sharpness", "analyze_sharpness", "apgd_checkpoints", "average_sharpness", "exact_noise_scale",
    "gradient_noise_scale", "keskar_phi", "keskar_sharpness", "load_sharpness", "noise_estimators",
    "pacbayes_flatness", "plan_parts", "summary_rows",
]
