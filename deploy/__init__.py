"""prunegym.deploy"""
