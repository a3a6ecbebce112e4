"""The builtin components: their one declaration, by name, without importing them.

Each registry is filled from this table lazily (``lttoolkit/registry/__init__.py``):
listing (``lttk list-components``) reads it and never imports torch, and a
component's module is imported the first time it is built. There is no
decorator at the definitions; ``tests/test_registry.py`` checks that every row
resolves to a real object where it says and that no module registers one itself.
A new builtin is one row here (and its definition in its family's package).
"""

from __future__ import annotations

# kind -> [(name, "module:attr", one-line summary)]
BUILTINS: dict[str, list[tuple[str, str, str]]] = {
    "samplers": [
        ("instance", "lttoolkit.samplers.instance:InstanceSampler",
         "Uniform over images (instance-balanced): BBN's conventional branch."),
        ("class_balanced", "lttoolkit.samplers.class_weighted:ClassBalancedSampler",
         "Class-aware sampling (Kang et al. 2020): cycles through the classes and, within each, its images."),
        ("square_root", "lttoolkit.samplers.class_weighted:SquareRootSampler",
         "Class i drawn with weight sqrt(N_i), then an image within it (Mahajan et al. 2018)."),
        ("reversed", "lttoolkit.samplers.class_weighted:ReversedSampler",
         "BBN's re-balancing sampler: class i drawn with weight N_max/N_i, then an image within it."),
        ("progressive", "lttoolkit.samplers.class_weighted:ProgressiveSampler",
         "Moves from instance to class-balanced sampling over the epochs (Kang et al. 2020)."),
    ],
    "losses": [
        ("cross_entropy", "lttoolkit.losses.cross_entropy:CrossEntropyLoss",
         "Softmax cross-entropy, optionally re-weighted per class (with deferred re-weighting)."),
        ("focal", "lttoolkit.losses.focal:FocalLoss",
         "Focal loss (Lin et al. 2017); gamma=0 is cross-entropy."),
        ("class_balanced", "lttoolkit.losses.class_balanced:ClassBalancedLoss",
         "Class-balanced loss by the effective number of samples (Cui et al. 2019), over CE or focal."),
        ("ldam", "lttoolkit.losses.ldam:LDAMLoss",
         "Label-distribution-aware margin loss (Cao et al. 2019), margins ~ N_i^(-1/4)."),
        ("balanced_softmax", "lttoolkit.losses.balanced_softmax:BalancedSoftmaxLoss",
         "Balanced softmax (Ren et al. 2020): logits shifted by log N_i during training."),
        ("logit_adjusted", "lttoolkit.losses.logit_adjusted:LogitAdjustedLoss",
         "Logit-adjusted loss (Menon et al. 2021): logits + tau * log prior."),
        ("label_smoothing", "lttoolkit.losses.label_smoothing:LabelSmoothingLoss",
         "Cross-entropy against label-smoothed targets (Szegedy et al. 2016)."),
        ("ride", "lttoolkit.losses.ride:RIDELoss",
         "RIDE's multi-expert loss (Wang et al. 2021): LDAM per expert plus a KL diversity term to the ensemble."),
    ],
    "schedules": [
        ("parabolic", "lttoolkit.schedules.alpha:ParabolicDecay",
         "BBN's cumulative-learning default: alpha = 1 - (T/T_max)^2."),
        ("linear", "lttoolkit.schedules.alpha:LinearDecay",
         "alpha = 1 - T/T_max."),
        ("cosine", "lttoolkit.schedules.alpha:CosineDecay",
         "alpha = cos(pi/2 * T/T_max)."),
        ("step", "lttoolkit.schedules.alpha:StepDecay",
         "alpha = 1 before a given epoch, 0 from it on."),
        ("constant", "lttoolkit.schedules.alpha:ConstantAlpha",
         "alpha fixed to a value (0.5 by default)."),
        ("parabolic_increment", "lttoolkit.schedules.alpha:ParabolicIncrement",
         "alpha = (T/T_max)^2: the reverse of BBN's default, from the paper's ablation."),
    ],
    "backbones": [
        (f"resnet{depth}_cifar", f"lttoolkit.backbones.cifar_resnet:resnet{depth}_cifar",
         f"ResNet-{depth} for 32x32 inputs (He et al. 2016, CIFAR form: 16/32/64 channels).")
        for depth in (20, 32, 44, 56, 110)
    ],
    "methods": [
        ("bbn", "lttoolkit.methods.bbn:bbn",
         "Bilateral-Branch Network with cumulative learning (Zhou et al. 2020)."),
        ("ce", "lttoolkit.methods.single_branch:ce",
         "Plain backbone, instance sampling, cross-entropy: the long-tail baseline."),
        ("rs", "lttoolkit.methods.presets:rs", "Re-sampling: class-balanced sampling with cross-entropy."),
        ("rw", "lttoolkit.methods.presets:rw", "Re-weighting: cross-entropy with inverse-frequency class weights."),
        ("drw", "lttoolkit.methods.presets:drw",
         "Deferred re-weighting (Cao et al. 2019): CE, then effective-number weights from 80% of training."),
        ("cb_focal", "lttoolkit.methods.presets:cb_focal",
         "Class-balanced sigmoid focal loss (Cui et al. 2019), bias from prior 1/C."),
        ("ldam_drw", "lttoolkit.methods.presets:ldam_drw",
         "LDAM-DRW (Cao et al. 2019): margin loss on a cosine classifier with deferred re-weighting."),
        ("balanced_softmax", "lttoolkit.methods.presets:balanced_softmax",
         "Balanced softmax (Ren et al. 2020)."),
        ("logit_adjust", "lttoolkit.methods.presets:logit_adjust",
         "Logit adjustment (Menon et al. 2021), as a loss or post hoc with tau."),
        ("crt", "lttoolkit.methods.decoupling:crt",
         "Decoupling stage 2 (Kang et al. 2020): re-train the classifier, features frozen, class-balanced."),
        ("lws", "lttoolkit.methods.decoupling:lws",
         "Decoupling stage 2 (Kang et al. 2020): learnable per-class weight scaling."),
        ("ride", "lttoolkit.methods.ride:ride",
         "RIDE (Wang et al. 2021), multi-expert: 3 diverse distribution-aware experts on a shared trunk, no router."),
        ("ride_ea", "lttoolkit.methods.ride:ride_ea",
         "RIDE stage 2, multi-expert: train the expert-assignment router on a frozen ride run (--from)."),
        ("tau_norm", "lttoolkit.methods.decoupling:tau_norm",
         "Decoupling stage 2 (Kang et al. 2020): tau-normalised classifier, logits without the bias, tau chosen on validation data."),
    ],
    "datasets": [
        ("embedded", "lttoolkit.data.loading:embedded_dataset",
         "Long-tailed Fashion-MNIST shipped with lttoolkit (600 to 6 images per class, imbalance 100; no root)."),
        ("fashion_mnist", "lttoolkit.data.loading:fashion_mnist_dataset",
         "Fashion-MNIST from its IDX files (Xiao et al. 2017)."),
        ("cifar10", "lttoolkit.data.loading:cifar10_dataset",
         "CIFAR-10 from cifar-10-batches-py (Krizhevsky 2009); long-tailed by data.imbalance_ratio."),
        ("cifar100", "lttoolkit.data.loading:cifar100_dataset",
         "CIFAR-100 from cifar-100-python (Krizhevsky 2009); fine or coarse labels."),
        ("image_folder", "lttoolkit.data.loading:image_folder_dataset",
         "Images in root/split/<class>/ folders."),
        ("json", "lttoolkit.data.loading:json_dataset",
         "Images listed by a JSON annotation file (iNaturalist 2018, BBN's format)."),
        ("text_list", "lttoolkit.data.loading:text_list_dataset",
         "Images listed as 'path label' lines (ImageNet-LT's text lists)."),
    ],
}
