"""(filled in below)"""

ROUTES: list = []
