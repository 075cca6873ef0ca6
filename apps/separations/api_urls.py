app_name = "separations-api"
urlpatterns = []
