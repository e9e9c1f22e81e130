"""The wire protocol between the coordinator and the sites: every record name, key and action.

Invariants:

- Every string that crosses between a site and the coordinator is named here and nowhere else
  (``tests/test_layout.py`` fails on a literal copy elsewhere). The run's settings travel under the
  flat run-config keys, which :mod:`fedscan.common.config` derives from its dataclass fields with
  :func:`config_key`, so they are not spelled out either.
- The values are the ones fedscan 0.1 sent (``tests/fixtures/v0_1/messages.json``): a coordinator
  and a site on the same major.minor keep talking whichever patch release each runs.
- What a site may *send* is decided by the allow-lists below (``TRAIN_METRICS``,
  ``EVALUATE_METRICS``, ``HISTOGRAM_KEYS``, ``STATS_ARRAYS``) and enforced in
  :mod:`fedscan.client.replies` only.

Message types: Flower's ``train``, ``evaluate`` and ``query``, with the actions below for the two
exchanges that are not plain training or evaluation (``evaluate.cross_site``,
``query.feature_stats``).
"""

from __future__ import annotations

# --- records of a message (RecordDict keys); Flower's strategies use the first three by default ---
ARRAYS = "arrays"  # the model (train, evaluate) or the feature sums (feature statistics)
CONFIG = "config"  # the run's settings and the request's own keys, coordinator → site
METRICS = "metrics"  # scalar metrics, site → coordinator
SITE = "site"  # the site's record: its name and fedscan version
EVALUATION = (
    "evaluation"  # a train reply's evaluation of the model it received (see EVALUATE_FIRST)
)
# Transport only (fedscan.wire): each array record packed into one byte array, so Flower moves
# one object instead of one per tensor; the layout record says how to unpack them.
PACKED = "packed"  # the one array of a packed array record
PACKED_LAYOUT = "packed-layout"  # config record: array record name → its layout (JSON)

# --- the site record ---
SITE_NAME = "name"
VERSION = "fedscan-version"  # in every request's config and every reply's site record

# --- request keys besides the run's settings (coordinator → site, in CONFIG) ---
RUN_ID = "run-id"  # the coordinator's run id: it keys each site's ledger and stored releases
SERVER_ROUND = "server-round"  # set by Flower's strategies; also fedscan's own exchanges
EVALUATE_FIRST = (
    "evaluate-first"  # score the received model on validation data before training on it
)
THRESHOLD = "threshold"  # the operating threshold chosen on the pooled validation histogram
PROXIMAL_MU = "proximal-mu"  # set by Flower's FedProx in every train request

# --- launch keys: set by `fedscan run` / `fedscan simulate` in Flower's run config for the apps,
# never sent to a site in a deployment ---
RUNS_DIR = "runs-dir"  # where the ServerApp writes run directories
RESUME = "resume"  # continue RUN_ID from its last checkpoint
DEVICE = "device"  # simulation: where the simulated sites train
SIMULATION_SITES = "simulation-sites"  # simulation: the sites' data sources, as JSON
SIMULATION_METRICS = "simulation-metrics"  # simulation: the sites' [privacy] metrics policy
SIMULATION_STATE_DIR = "simulation-state-dir"  # simulation: the folder of the sites' state folders

# --- Flower's own: the Flower run id in the JSON that `flwr run` and `flwr ls` print (not RUN_ID)
# ---
FLOWER_CLI_RUN_ID = "run-id"

# --- actions (Flower message type "<type>.<action>") ---
CROSS_SITE_ACTION = "cross_site"  # evaluate.cross_site: every model at every site
STATS_ACTION = (
    "feature_stats"  # query.feature_stats: the classical models' federated standardisation
)
STATS_ROUND = 0  # the ledger's round of the feature-statistics release (training rounds start at 1)

# --- cross-site validation: one ARRAYS-like record per model, named ---
GLOBAL_MODEL = "global"
LOCAL_MODEL_PREFIX = "local:"


def local_model_name(site: str) -> str:
    """The record (and matrix row) of ``site``'s locally fine-tuned model."""
    return f"{LOCAL_MODEL_PREFIX}{site}"


# --- train metrics (site → coordinator, in METRICS) ---
NUM_EXAMPLES = (
    "num-examples"  # training samples: Flower's FedAvg weight, checked by the update gate
)
TRAIN_LOSS = "train-loss"
STEPS = "steps"
NOISE_MULTIPLIER = "noise-multiplier"
EPSILON = "epsilon"  # the run's ε at the site once this release is counted (∞ without DP)
SITE_SECONDS = "site-seconds"  # the handler's own time at the site (data + training or evaluation)
TRAIN_METRICS = frozenset(
    {NUM_EXAMPLES, TRAIN_LOSS, STEPS, NOISE_MULTIPLIER, EPSILON, SITE_SECONDS}
)
INTEGER_METRICS = frozenset({NUM_EXAMPLES, STEPS})

# --- evaluation metrics (site → coordinator, in METRICS or EVALUATION, or a cross-site record) ---
AUC = "auc"
ACCURACY = "accuracy"
SENSITIVITY = "sensitivity"
SPECIFICITY = "specificity"
F1 = "f1"
PRECISION = "precision"
POSITIVES = "positives"
LOSS = "loss"
CLASSIFICATION_METRICS = (AUC, ACCURACY, SENSITIVITY, SPECIFICITY, F1, LOSS)
DICE = "dice"
IOU = "iou"
HD95 = "hd95"
SEGMENTATION_METRICS = (DICE, IOU, HD95, LOSS)
# Segmentation: foreground pixel counts over the site's validation masks (pooled Dice at the
# coordinator).
SEG_INTERSECTION = "seg-intersection"
SEG_PREDICTED = "seg-predicted"
SEG_TRUTH = "seg-truth"
COUNT_KEYS = (SEG_INTERSECTION, SEG_PREDICTED, SEG_TRUTH)
# Classification: the validation score histogram (counts per bin, score sum per bin).
HIST_POSITIVES = "hist-pos"
HIST_NEGATIVES = "hist-neg"
HIST_SCORE_SUMS = "hist-score-sum"
HISTOGRAM_KEYS = (HIST_POSITIVES, HIST_NEGATIVES, HIST_SCORE_SUMS)
# Under a site's ``[privacy] metrics = "dp"`` (or "final-only"): the coarse histogram and the
# clipped loss sum, each coordinate noised (common/metrics/private.py); floats, possibly negative.
DP_HIST_POSITIVES = "dp-hist-pos"
DP_HIST_NEGATIVES = "dp-hist-neg"
DP_LOSS_UNITS = "dp-loss-units"  # Σ min(loss, clip) / clip, noised
DP_NOISE_STD = "dp-noise-std"  # the noise's standard deviation per coordinate (public)
DP_HISTOGRAM_KEYS = (DP_HIST_POSITIVES, DP_HIST_NEGATIVES)
DP_CLASS_HIST_POSITIVES = "dp-class-hist-pos"  # K × coarse bins, per class (one-vs-rest)
DP_CLASS_HIST_NEGATIVES = "dp-class-hist-neg"
DP_CONFUSION_MATRIX = "dp-confusion-matrix"  # K × K, multiclass
DP_SEG_COUNTS = "dp-seg-counts"  # intersection, predicted, truth (pixels), images
DP_LABEL_OVERLAPS = "dp-label-overlaps"  # a label map's K × (TP, FP, FN) pixels, then images
DP_CLASS_KEYS = (DP_CLASS_HIST_POSITIVES, DP_CLASS_HIST_NEGATIVES, DP_CONFUSION_MATRIX)
DP_LIST_KEYS = (*DP_HISTOGRAM_KEYS, *DP_CLASS_KEYS, DP_SEG_COUNTS, DP_LABEL_OVERLAPS)
DP_SCALARS = (DP_LOSS_UNITS, DP_NOISE_STD)
# A site's metric release policy, in its site record; 1 in a metric record that the site withheld.
METRICS_POLICY = "metrics-policy"
METRICS_WITHHELD = "metrics-withheld"
METRICS_EPSILON = "metrics-epsilon"  # the run's ε on the site's validation images so far
# Multiclass / multilabel: one one-vs-rest histogram per class, K × BINS flattened row by row in
# the run's class order; multiclass also a K × K confusion matrix [true, predicted], flattened.
CLASS_HIST_POSITIVES = "class-hist-pos"
CLASS_HIST_NEGATIVES = "class-hist-neg"
CLASS_HIST_SCORE_SUMS = "class-hist-score-sum"
CLASS_HISTOGRAM_KEYS = (CLASS_HIST_POSITIVES, CLASS_HIST_NEGATIVES, CLASS_HIST_SCORE_SUMS)
CONFUSION_MATRIX = "confusion-matrix"
# Segmentation with a label map of K structures: K × (TP, FP, FN) pixel counts, flattened row by
# row in the run's structure order (per-structure Dice at the coordinator).
LABEL_OVERLAPS = "label-overlaps"
MACRO_AUC = "macro-auc"  # a site's own macro AUC (scalar); pooled, also the per-class detail
MICRO_AUC = "micro-auc"
BALANCED_ACCURACY = "balanced-accuracy"
EVALUATE_METRICS = frozenset(
    {
        NUM_EXAMPLES,
        PRECISION,
        POSITIVES,
        SITE_SECONDS,
        *CLASSIFICATION_METRICS,
        *SEGMENTATION_METRICS,
        *COUNT_KEYS,
        MACRO_AUC,
        BALANCED_ACCURACY,
        *DP_SCALARS,
        METRICS_WITHHELD,
        METRICS_EPSILON,
    }
)

# --- feature statistics (site → coordinator, in ARRAYS) ---
STATS_SUM = "sum"
STATS_SQUARES = "squares"
STATS_ARRAYS = (STATS_SUM, STATS_SQUARES)

# --- secure aggregation (common/secagg): the round's extra exchanges, each a train message ---
# A train reply under secure aggregation carries the site's key advert (SECAGG) instead of ARRAYS;
# then "train.<action>" below, in order: roster -> share bundle, delivery -> masked input, unmask
# request -> answer. Every other record (CONFIG, SITE) is as in any exchange.
SECAGG = "secagg"  # config record of one secure-aggregation message, either way
SECAGG_MASKED = "secagg-masked"  # array record: a site's masked input (one uint64 array)
SECAGG_VALUES = "values"  # the masked input's one array
SECAGG_SHARE_ACTION = "secagg_share_keys"  # roster -> share bundle
SECAGG_MASK_ACTION = "secagg_mask"  # share delivery -> masked input
SECAGG_UNMASK_ACTION = "secagg_unmask"  # unmask request -> answer
SECAGG_THRESHOLD = "secagg-threshold"  # request key (CONFIG): sites that must survive each stage
SECAGG_SITE_ID = "site-id"  # the sender's secure-aggregation id (its Flower node id, as text)
SECAGG_ENCRYPTION_KEY = "encryption-key"  # advert: X25519 public key that seals shares
SECAGG_MASKING_KEY = "masking-key"  # advert: X25519 public key that derives pairwise masks
SECAGG_SITE_IDS = "site-ids"  # roster: the ids, sorted; with the two key lists in the same order
SECAGG_ENCRYPTION_KEYS = "encryption-keys"
SECAGG_MASKING_KEYS = "masking-keys"
SECAGG_SENDERS = "senders"  # envelopes: who sealed each one
SECAGG_RECEIVERS = "receivers"  # envelopes: whom each one is for
SECAGG_SEALED = "sealed"  # envelopes: the sealed shares
SECAGG_SURVIVORS = "survivors"  # unmask request: whose masked inputs are in the sum
SECAGG_SEED_OWNERS = "seed-owners"  # answer: whose self-mask seed each share is of
SECAGG_SEED_SHARES = "seed-shares"
SECAGG_KEY_OWNERS = "key-owners"  # answer: whose masking key each share is of
SECAGG_KEY_SHARES = "key-shares"

# --- coordinator-internal: the equal weight central DP gives every accepted update before FedAvg
# ---
UNIFORM_WEIGHT = "central-dp-weight"


def config_key(field_name: str) -> str:
    """The flat run-config key of a settings field: its name in kebab-case (``clip_norm`` →
    ``clip-norm``)."""
    return field_name.replace("_", "-")
