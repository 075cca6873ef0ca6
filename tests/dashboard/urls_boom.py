"""The panel's URLs plus one view that breaks, for the 500 page's test."""

from django.urls import path

from controlpanel.urls import handler403, handler404, handler500, urlpatterns  # noqa: F401


def boom(request):
    raise RuntimeError("a bug")


urlpatterns = [path("boom/", boom), *urlpatterns]
