"""The service's BentoML API methods, as BentoML finds them for each request."""

import pytest

from credit_risk.serving.service import CreditRiskService, keep_api_methods


@pytest.mark.parametrize("name", ["predict", "predict_batch"])
def test_the_api_methods_are_built_once_per_instance(name):
    """BentoML's ``getattr(instance, name).local`` per request: a new wrapper each time from
    BentoML's descriptor, the same one once they are kept, wrapping the same function."""
    fresh = object.__new__(CreditRiskService.inner)
    assert getattr(fresh, name) is not getattr(fresh, name)  # what keeping them avoids

    instance = object.__new__(CreditRiskService.inner)
    keep_api_methods(instance)
    found = getattr(instance, name)
    assert found is getattr(instance, name) and found.local is getattr(instance, name).local
    assert found.local.func is getattr(CreditRiskService.inner, name).func
    assert found.local.__is_bentoml_api_func__
