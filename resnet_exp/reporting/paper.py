"""The paper's numbers that our reports compare against (He et al. 2016, Table 6 and
section 4.2; pre-activation numbers from He et al., ECCV 2016)."""

# CIFAR-10 test error (%), Table 6. ResNet-110: best of 5 runs (mean 6.61 +- 0.16).
TABLE6_TEST_ERROR = {"resnet20": 8.75, "resnet32": 7.51, "resnet44": 7.17, "resnet56": 6.97,
                     "resnet110": 6.43, "resnet1202": 7.93}
TABLE6_NOTES = {"resnet110": "best of 5 runs; mean 6.61 +- 0.16"}
# Where the paper gives a mean and a standard deviation: (mean, std, runs).
TABLE6_MEAN_STD = {"resnet110": (6.61, 0.16, 5)}
TABLE6_PARAMS = {"resnet20": "0.27M", "resnet32": "0.46M", "resnet44": "0.66M", "resnet56": "0.85M",
                 "resnet110": "1.7M", "resnet1202": "19.4M"}

# Identity Mappings (ECCV 2016), CIFAR-10 test error (%), full pre-activation.
PREACT_TEST_ERROR = {"preresnet110": 6.37}

# A widely used PyTorch re-implementation (option A, 200 epochs on all 50k images).
REIMPLEMENTATION_TEST_ERROR = {"resnet20": 8.27, "resnet32": 7.37, "resnet44": 6.90, "resnet56": 6.61,
                               "resnet110": 6.32, "resnet1202": 6.18}

PLAIN_NOTE = ("The paper gives no test-error number for plain nets; its Figures 1 and 6 show "
              "them above their ResNet counterparts, worse with depth (plain-110 above 60 %).")

# One colour per depth, the same in every panel and report.
DEPTH_COLORS = {20: "#e6a817", 32: "#1f9bd7", 44: "#2ca02c", 56: "#d62728", 110: "#111111",
                1202: "#8c4fc4"}

# What a report made from a profile other than the paper's says at its top (results.py's
# profile_warning; a rung of the budget ladder without a text here gets one made from the rung).
PROFILE_WARNINGS = {
    "quick": "quick profile: the paper's recipe compressed to a 1/32 schedule (2,000 iterations instead of "
             "64,000, lr drops at 1,000 and 1,500); not comparable with the paper's numbers. Orderings and gaps "
             "between networks are what it shows.",
    "first2k": "first2k profile: the paper's first 2,000 iterations (lr 0.1 throughout, no drop); an early "
               "snapshot of the paper's curves, not final errors.",
    "smoke": "smoke profile: a few dozen iterations on a small subset, to check the plumbing; the numbers "
             "say nothing about the paper.",
}
