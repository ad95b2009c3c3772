"""prunegym.env"""
