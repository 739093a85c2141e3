from django.urls import path
from shop import views

urlpatterns = [
    path("sleep", views.sleep),
    path("upstream", views.upstream),
    path("db", views.db),
]
