"""Forecasting: the next values of one or many time series, with prediction intervals."""
