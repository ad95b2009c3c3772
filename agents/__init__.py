"""prunegym.agents"""
