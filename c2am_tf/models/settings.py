"""What a model carries besides its weights and is read the same way for every model kind."""

from c2am_tf.maps.geometry import check_band


def model_box_band(model, band=None):
    """The box band to box ``model``'s maps with: ``band`` when given (checked), else the model's own
    ``box_band``; 0 for no model or one without the setting (a file saved before it, a mask model).

    >>> model_box_band(None), model_box_band(None, 0.1)
    (0.0, 0.1)
    """
    return check_band(band) if band is not None else float(getattr(model, "box_band", 0.0))
