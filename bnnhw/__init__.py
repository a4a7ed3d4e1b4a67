"""bnnhw"""
