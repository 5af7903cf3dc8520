"""The feature contract: the one definition of the model's inputs.

Every part of the product reads the applicant fields from here: ``prepare`` validates the raw
Kaggle-format CSV against it and renames its columns, ``train`` selects the model inputs in this
order, and the serving API builds its request schema and bounds from it.

Canonical names are the Kaggle headers with ``-`` replaced by ``_`` (valid Python identifiers,
the names the HTTP API uses). Every feature is handed to the model as float64; missing values are
NaN. Bounds are inclusive and admit every applicant of the Kaggle training and test files, with
room to spare (e.g. the largest monthly income there is 7.7 million, the bound 100 million);
every feature has a finite maximum, so no derived value (``DebtRatio × MonthlyIncome``) can
overflow.
"""

from dataclasses import dataclass

PAST_DUE_SENTINEL_CODES = (96, 98)
"""Codes the Kaggle data uses in the past-due counts instead of a count (unknown / not reported)."""


@dataclass(frozen=True)
class Feature:
    """One applicant field."""

    name: str
    kaggle_name: str
    description: str
    integer: bool
    minimum: float
    maximum: float
    nullable: bool = False
    sentinel_codes: tuple[int, ...] = ()


FEATURES: tuple[Feature, ...] = (
    Feature(
        "RevolvingUtilizationOfUnsecuredLines",
        "RevolvingUtilizationOfUnsecuredLines",
        "Balance on credit cards and personal lines of credit divided by their credit limits",
        integer=False,
        minimum=0,
        maximum=1e6,
    ),
    Feature("age", "age", "Age of the borrower in years", integer=True, minimum=0, maximum=120),
    Feature(
        "NumberOfTime30_59DaysPastDueNotWorse",
        "NumberOfTime30-59DaysPastDueNotWorse",
        "Times 30-59 days past due (not worse) in the last 2 years; 96 and 98 are codes",
        integer=True,
        minimum=0,
        maximum=98,
        sentinel_codes=PAST_DUE_SENTINEL_CODES,
    ),
    Feature(
        "DebtRatio",
        "DebtRatio",
        "Monthly debt payments divided by monthly income; in dollars when income is missing",
        integer=False,
        minimum=0,
        maximum=1e7,
    ),
    Feature(
        "MonthlyIncome",
        "MonthlyIncome",
        "Monthly income in dollars",
        integer=False,
        minimum=0,
        maximum=1e8,
        nullable=True,
    ),
    Feature(
        "NumberOfOpenCreditLinesAndLoans",
        "NumberOfOpenCreditLinesAndLoans",
        "Open loans (instalment, e.g. car or mortgage) and lines of credit (e.g. credit cards)",
        integer=True,
        minimum=0,
        maximum=200,
    ),
    Feature(
        "NumberOfTimes90DaysLate",
        "NumberOfTimes90DaysLate",
        "Times 90 days or more past due; 96 and 98 are codes",
        integer=True,
        minimum=0,
        maximum=98,
        sentinel_codes=PAST_DUE_SENTINEL_CODES,
    ),
    Feature(
        "NumberRealEstateLoansOrLines",
        "NumberRealEstateLoansOrLines",
        "Mortgage and real estate loans, home equity lines of credit included",
        integer=True,
        minimum=0,
        maximum=200,
    ),
    Feature(
        "NumberOfTime60_89DaysPastDueNotWorse",
        "NumberOfTime60-89DaysPastDueNotWorse",
        "Times 60-89 days past due (not worse) in the last 2 years; 96 and 98 are codes",
        integer=True,
        minimum=0,
        maximum=98,
        sentinel_codes=PAST_DUE_SENTINEL_CODES,
    ),
    Feature(
        "NumberOfDependents",
        "NumberOfDependents",
        "Dependents in the family, the borrower excluded",
        integer=True,
        minimum=0,
        maximum=50,
        nullable=True,
    ),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
TARGET = "SeriousDlqin2yrs"
"""Person experienced 90 days past due delinquency or worse (1) or not (0); same name in both."""

KAGGLE_TO_CANONICAL: dict[str, str] = {f.kaggle_name: f.name for f in FEATURES} | {TARGET: TARGET}

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
