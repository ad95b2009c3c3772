"""prunegym.search"""
