"""The PSOL box regressor trained on pseudo boxes."""
