from django.shortcuts import render


def list_view(request):
    return render(request, "dashboard/placeholder.html", {"title": "mixjobs"})
