"""rtl_gen"""
