"""Filled by a later issue (see README's layout); nothing is registered here yet."""
