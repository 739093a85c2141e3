from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=100)

    class Meta:
        db_table = "shop_item"  # created by the test (tests/test_frameworks.py)
        managed = False
