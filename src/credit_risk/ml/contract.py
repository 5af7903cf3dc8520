"""The feature contract: the one definition of the model's inputs, their risk directions and
their reason codes.

Every part of the product reads the applicant fields from here: ``prepare`` validates the raw
Kaggle-format CSV against it and renames its columns, ``train`` selects the model inputs in this
order and constrains the model with the declared directions, the serving API builds its request
schema and bounds from it, and reason codes name its adverse factors.

Canonical names are the Kaggle headers with ``-`` replaced by ``_`` (valid Python identifiers,
the names the HTTP API uses). Every feature is handed to the model as float64; missing values are
NaN. Bounds are inclusive and admit every applicant of the Kaggle training and test files, with
room to spare (e.g. the largest monthly income there is 7.7 million, the bound 100 million);
every feature has a finite maximum, so no derived value can overflow.

``monotone`` is the direction risk may move when the feature grows: ``+1`` never down, ``-1``
never up, ``0`` either way (``why`` says why). ``reference`` is the value of the reference
applicant against which reason codes are computed (:mod:`credit_risk.ml.scorecard`).
"""

from dataclasses import dataclass

import numpy as np

PAST_DUE_SENTINEL_CODES = (96, 98)
"""Codes the Kaggle data uses in the past-due counts instead of a count (unknown / not reported)."""


def is_past_due_code(values: np.ndarray) -> np.ndarray:
    """Where ``values`` hold one of :data:`PAST_DUE_SENTINEL_CODES` (as ``np.isin``, without
    its sorting: a few times faster on the few rows of ``/predict``)."""
    return np.logical_or.reduce([values == code for code in PAST_DUE_SENTINEL_CODES])


@dataclass(frozen=True)
class Feature:
    """One applicant field."""

    name: str
    kaggle_name: str
    description: str
    integer: bool
    minimum: float
    maximum: float
    monotone: int
    why: str
    reference: float
    reason_code: str
    reason: str
    nullable: bool = False
    missing_reason_code: str = ""
    """For a nullable feature: the reason code of a missing value (an adverse factor too)."""
    missing_reason: str = ""
    sentinel_codes: tuple[int, ...] = ()


_PAST_DUE = "past due (not worse) in the last 2 years; 96 and 98 are codes"

FEATURES: tuple[Feature, ...] = (
    Feature(
        "RevolvingUtilizationOfUnsecuredLines",
        "RevolvingUtilizationOfUnsecuredLines",
        "Balance on credit cards and personal lines of credit divided by their credit limits",
        integer=False,
        minimum=0,
        maximum=1e6,
        monotone=+1,
        why="using more of one's credit limits never lowers risk",
        reference=0.1,
        reason_code="UTIL",
        reason="High use of revolving credit limits",
    ),
    Feature(
        "age",
        "age",
        "Age of the borrower in years",
        integer=True,
        minimum=0,
        maximum=120,
        monotone=-1,
        why="default rates fall with age in the data; growing older never raises risk",
        reference=60,
        reason_code="AGE",
        reason="Age: younger applicants default more often in the data",
    ),
    Feature(
        "NumberOfTime30_59DaysPastDueNotWorse",
        "NumberOfTime30-59DaysPastDueNotWorse",
        f"Times 30-59 days {_PAST_DUE}",
        integer=True,
        minimum=0,
        maximum=98,
        monotone=+1,
        why="more late payments never lower risk",
        reference=0,
        reason_code="LATE30",
        reason="Payments 30 to 59 days past due",
        sentinel_codes=PAST_DUE_SENTINEL_CODES,
    ),
    Feature(
        "DebtRatio",
        "DebtRatio",
        "Monthly debt payments divided by monthly income; in dollars when income is missing",
        integer=False,
        minimum=0,
        maximum=1e7,
        monotone=+1,
        why="more debt for the same income (or, without income, more debt) never lowers risk",
        reference=0.2,
        reason_code="DEBT",
        reason="High monthly debt payments for the income",
    ),
    Feature(
        "MonthlyIncome",
        "MonthlyIncome",
        "Monthly income in dollars",
        integer=False,
        minimum=0,
        maximum=1e8,
        monotone=-1,
        why="more income for the same debt ratio never raises risk",
        reference=8000,
        reason_code="INCOME",
        reason="Low monthly income",
        nullable=True,
        missing_reason_code="NOINCOME",
        missing_reason="Monthly income not reported",
    ),
    Feature(
        "NumberOfOpenCreditLinesAndLoans",
        "NumberOfOpenCreditLinesAndLoans",
        "Open loans (instalment, e.g. car or mortgage) and lines of credit (e.g. credit cards)",
        integer=True,
        minimum=0,
        maximum=200,
        monotone=0,
        why="both very few and very many open lines go with more risk",
        reference=8,
        reason_code="LINES",
        reason="Number of open credit lines and loans",
    ),
    Feature(
        "NumberOfTimes90DaysLate",
        "NumberOfTimes90DaysLate",
        "Times 90 days or more past due; 96 and 98 are codes",
        integer=True,
        minimum=0,
        maximum=98,
        monotone=+1,
        why="more serious delinquencies never lower risk",
        reference=0,
        reason_code="LATE90",
        reason="Serious delinquency: payments 90 days or more past due",
        sentinel_codes=PAST_DUE_SENTINEL_CODES,
    ),
    Feature(
        "NumberRealEstateLoansOrLines",
        "NumberRealEstateLoansOrLines",
        "Mortgage and real estate loans, home equity lines of credit included",
        integer=True,
        minimum=0,
        maximum=200,
        monotone=0,
        why="no real estate loan and many of them both go with more risk than one or two",
        reference=1,
        reason_code="REALTY",
        reason="Number of real estate loans or lines",
    ),
    Feature(
        "NumberOfTime60_89DaysPastDueNotWorse",
        "NumberOfTime60-89DaysPastDueNotWorse",
        f"Times 60-89 days {_PAST_DUE}",
        integer=True,
        minimum=0,
        maximum=98,
        monotone=+1,
        why="more late payments never lower risk",
        reference=0,
        reason_code="LATE60",
        reason="Payments 60 to 89 days past due",
        sentinel_codes=PAST_DUE_SENTINEL_CODES,
    ),
    Feature(
        "NumberOfDependents",
        "NumberOfDependents",
        "Dependents in the family, the borrower excluded",
        integer=True,
        minimum=0,
        maximum=50,
        monotone=0,
        why="the data shows no steady direction",
        reference=0,
        reason_code="DEPENDENTS",
        reason="Number of dependents",
        nullable=True,
        missing_reason_code="NODEPENDENTS",
        missing_reason="Number of dependents not reported",
    ),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
TARGET = "SeriousDlqin2yrs"
"""Person experienced 90 days past due delinquency or worse (1) or not (0); same name in both."""

KAGGLE_TO_CANONICAL: dict[str, str] = {f.kaggle_name: f.name for f in FEATURES} | {TARGET: TARGET}

REFERENCE_APPLICANT: dict[str, float] = {f.name: float(f.reference) for f in FEATURES}
"""A low-risk applicant: the reason codes say how far each input falls behind it."""


@dataclass(frozen=True)
class ReasonCode:
    """One adverse factor a declined applicant can be told about."""

    code: str
    feature: str
    description: str


PAST_DUE_NOT_REPORTED = ReasonCode(
    "LATECODE",
    "NumberOfTimes90DaysLate",
    "Past-due history reported only as a code (96 or 98), not as counts",
)
REASON_CODES_VERSION = 1
"""Changes whenever a code is added, removed or reworded; codes are never reused."""
REASON_CODES: tuple[ReasonCode, ...] = (
    *(ReasonCode(f.reason_code, f.name, f.reason) for f in FEATURES),
    *(ReasonCode(f.missing_reason_code, f.name, f.missing_reason) for f in FEATURES if f.nullable),
    PAST_DUE_NOT_REPORTED,
)

EXAMPLE_APPLICANT: dict[str, float | int | None] = {
    "RevolvingUtilizationOfUnsecuredLines": 0.35,
    "age": 45,
    "NumberOfTime30_59DaysPastDueNotWorse": 0,
    "DebtRatio": 0.3,
    "MonthlyIncome": 5400.0,
    "NumberOfOpenCreditLinesAndLoans": 8,
    "NumberOfTimes90DaysLate": 0,
    "NumberRealEstateLoansOrLines": 1,
    "NumberOfTime60_89DaysPastDueNotWorse": 0,
    "NumberOfDependents": None,
}
"""One applicant as the HTTP API takes it (canonical names), for docs, tests and benchmarks."""
