"""A Django shop whose orders and receipt tasks commit in one ``transaction.atomic()``."""
