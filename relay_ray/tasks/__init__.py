"""Synthetic reasoning tasks the project trains and evaluates its demo models on."""
