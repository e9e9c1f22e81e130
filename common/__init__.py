"""Data model and maths shared by sites and coordinator. Imports no Flower."""
