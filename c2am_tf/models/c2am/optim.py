"""Parameter groups (learning-rate multipliers and weight decay) and the poly schedule.

Keras optimizers have one learning rate. A group's multiplier is applied to its
gradient instead, and weight decay is added to the gradient as PyTorch's SGD
does (coupled L2): for SGD with momentum, ``m * (g + wd * w)`` with learning
rate ``lr`` is the same update as ``g + wd * w`` with learning rate ``m * lr``.
A variable with multiplier 0 is not updated at all (the same as frozen).

Recipes (measured in docs/results/cub.md):
- ``"reference"``: what the authors' code does: every conv kernel (head
  included) at x1 with weight decay, conv biases at x2 without, and no
  BatchNorm gamma/beta trained (running statistics still update).
- ``"paper"``: what the authors intended: backbone weights x1 (decay), backbone
  biases x2 (no decay), head weights x10 (decay), head biases x20 (no decay).
- ``"head10"``: the reference recipe with the head's conv kernel at x10.
"""

import keras

RECIPES = ("reference", "paper", "head10")

_CONV = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def _kind(layer, variable):
    """'weight', 'bias', 'bn_weight', 'bn_bias' or None for one variable of a layer."""
    name = variable.path.split("/")[-1]
    if isinstance(layer, keras.layers.BatchNormalization):
        return {"gamma": "bn_weight", "beta": "bn_bias"}.get(name)
    if isinstance(layer, _CONV):
        return {"kernel": "weight", "depthwise_kernel": "weight", "bias": "bias"}.get(name)
    return None


_MULTIPLIERS = {
    # recipe: {(part, kind): (lr multiplier, weight decay on)}
    "reference": {
        ("backbone", "weight"): (1, True), ("backbone", "bias"): (2, False),
        ("head", "weight"): (1, True),
    },
    "paper": {
        ("backbone", "weight"): (1, True), ("backbone", "bias"): (2, False),
        ("backbone", "bn_weight"): (1, True), ("backbone", "bn_bias"): (2, False),
        ("head", "weight"): (10, True), ("head", "bn_weight"): (10, True),
        ("head", "bn_bias"): (20, False),
    },
    "head10": {
        ("backbone", "weight"): (1, True), ("backbone", "bias"): (2, False),
        ("head", "weight"): (10, True),
    },
}


def parameter_groups(backbone, head, recipe="reference"):
    """[(variable, lr multiplier, decays)] for the trainable variables a recipe updates.

    Variables of layers with ``trainable=False`` are never included, so the
    usual Keras way of freezing part of a backbone composes with any recipe.
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    table = _MULTIPLIERS[recipe]
    groups = []
    for layer in backbone._flatten_layers(include_self=False):
        if not layer.trainable:
            continue
        for v in layer._trainable_variables:
            mult, decay = table.get(("backbone", _kind(layer, v)), (0, False))
            if mult:
                groups.append((v, float(mult), decay))
    head_kinds = {"kernel": "weight", "gamma": "bn_weight", "beta": "bn_bias"}
    if head.trainable:
        for v in head.trainable_variables:
            kind = head_kinds.get(v.path.split("/")[-1])
            mult, decay = table.get(("head", kind), (0, False))
            if mult:
                groups.append((v, float(mult), decay))
    return groups


def poly_sgd(learning_rate, total_steps, momentum=0.9, power=0.9):
    """SGD with lr * (1 - step / total_steps) ** power (the authors' PolyOptimizer)."""
    schedule = keras.optimizers.schedules.PolynomialDecay(
        learning_rate, max(int(total_steps), 1), end_learning_rate=0.0, power=power
    )
    return keras.optimizers.SGD(learning_rate=schedule, momentum=momentum)
