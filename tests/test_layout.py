"""Every public name of the package before it was laid out for fourteen chapters is still importable from its
module (where a name moved, the old module re-exports it): notebooks and course material written against the
old layout keep working."""

import importlib

import pytest

from coursekit import divergences, gan, mixtures, score, wasserstein

#: module -> the public names it had (its ``__all__``; for gan, which had none, its public top-level names).
PUBLIC_BEFORE = {
    "runtime": (
        "PROFILES", "PROFILE_ENV_VAR", "Runtime", "get_device", "seed_everything", "get_profile", "budget",
        "in_colab", "setup",
    ),
    "data": (
        "DIGITS_SPLIT_SIZES", "load_digits", "two_moons", "swiss_roll", "ring_of_gaussians", "ring_modes",
        "grid_of_gaussians", "grid_modes", "gaussian_mixture", "sample_2d", "TOY_2D", "MNIST_FILES", "load_mnist",
        "read_idx",
    ),
    "nets": (
        "MLP", "ConvEncoder8x8", "ConvDecoder8x8", "SinusoidalTimeEmbedding", "UNet",
    ),
    "train": (
        "TrainingDiverged", "History", "fit",
    ),
    "plotting": (
        "image_grid", "plot_history", "scatter_2d", "density_2d", "vector_field_2d", "interpolation_strip",
    ),
    "student": (
        "UnbalancedSolutionGate", "StripReport", "strip_notebook", "make_student_edition", "main",
    ),
    "divergences": (
        "gaussian_kl", "kl_divergence", "js_divergence", "total_variation", "FDivergence", "F_DIVERGENCES",
        "f_divergence", "f_variational_bound", "wasserstein1_1d",
    ),
    "vae": (
        "reparameterise", "bernoulli_log_likelihood", "VAE", "elbo", "vae_loss", "log_mean_exp",
        "iwae_from_log_weights", "iwae_bound", "LinearGaussianModel", "reparam_gradient_samples",
        "score_function_gradient_samples", "fit_independent_bernoulli", "independent_bernoulli_log_prob",
    ),
    "metrics": (
        "nats_to_bits_per_dim", "dequantize_nll_correction", "discrete_nll_to_bits_per_dim", "uniform_dequantize",
        "frechet_distance", "frechet_distance_from_features", "mmd2_unbiased", "kernel_distance", "inception_score",
        "precision_recall", "density_coverage", "prdc", "CLASSIFIER_VERSION", "FEATURE_DIM", "DigitsClassifier",
        "get_digits_classifier", "features", "probabilities", "COURSE_SAMPLE_SIZE", "KID_SUBSETS", "KID_SUBSET_SIZE",
        "sample_quality", "real_data_floor", "fid_vs_sample_size",
    ),
    "bench": (
        "SCHEMA_VERSION", "METRIC_KEYS", "BenchContext", "TrainedModel", "Recipe", "REGISTRY", "register",
        "run_bench", "format_table", "main",
    ),
    "score": (
        "jacobian_trace", "hyvarinen_loss", "sliced_score_matching_loss", "dsm_target",
        "denoising_score_matching_loss", "geometric_sigmas", "ncsn_loss", "langevin_sample",
        "annealed_langevin_sample", "gaussian_mixture_log_prob", "gaussian_mixture_score", "gaussian_mmd2",
        "mmd_permutation_test", "NoiseConditionalMLP", "NoiseConditionalConvNet8x8",
    ),
    "flows": (
        "DIGITS_LEVELS", "standard_normal_log_prob", "FlowLayer", "ElementwiseAffine", "Permute", "LogitTransform",
        "AffineCoupling", "MaskedLinear", "MADE", "MAFLayer", "IAFLayer", "Flow", "checkerboard_mask", "realnvp",
        "maf", "iaf", "autograd_log_det", "check_layer", "nll_loss", "dequantize_digits", "digits_bits_per_dim",
        "dequantized_nll", "quantize_digits",
    ),
    "diffusion": (
        "SCHEDULES", "beta_schedule", "alphas_cumprod_from_betas", "snr", "log_snr", "q_sample", "q_step",
        "simulate_forward_chain", "q_posterior_mean_variance", "predict_x0_from_eps", "predict_eps_from_x0",
        "p_mean_variance", "ddpm_step", "ddim_step", "ddim_timesteps", "ddpm_sample", "ddim_sample",
        "sample_timesteps", "l_simple", "diffusion_loss", "vlb_weights", "normal_kl",
        "discretized_gaussian_log_likelihood", "vlb_terms", "to_model_space", "to_image_space",
    ),
    "gan": (
        "optimal_discriminator", "gan_value", "discriminator_loss", "generator_loss", "wasserstein_critic_loss",
        "wasserstein_generator_loss", "gradient_penalty", "clip_weights", "mode_coverage", "EnsembleMLP",
        "GAN_LOSS_DEFAULTS", "fit_gan", "generate", "COURSE_SEEDS", "BENCHMARKS_2D", "Recipe2D", "RECIPES_2D",
        "BEST_RECIPE_2D", "train_2d_gans", "evaluate_2d_gans", "ModeCoverageTable", "reference_rows",
        "mode_coverage_table", "DigitsGenerator", "DigitsDiscriminator", "class_agreement",
        "density_ratio_from_logits", "f_gan_value", "f_gan_discriminator_loss", "f_gan_generator_loss",
        "gaussian_kernel_matrix", "mmd2_unbiased", "mmd2_biased", "ssgan_real_logit", "ssgan_discriminator_loss",
        "feature_matching_loss", "MLPGenerator",
    ),
}


@pytest.mark.parametrize("module", sorted(PUBLIC_BEFORE))
def test_every_public_name_of_the_old_layout_is_importable(module):
    mod = importlib.import_module(f"coursekit.{module}")
    missing = [name for name in PUBLIC_BEFORE[module] if not hasattr(mod, name)]
    assert not missing, f"coursekit.{module} no longer provides {missing}"


def test_a_moved_name_is_the_same_object_as_in_its_new_module():
    assert gan.gradient_penalty is wasserstein.gradient_penalty
    assert gan.mode_coverage_table is wasserstein.mode_coverage_table
    assert divergences.f_divergence is wasserstein.f_divergence
    assert score.gaussian_mixture_score is mixtures.gaussian_mixture_score
