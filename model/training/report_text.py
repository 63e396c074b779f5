"""Sentence pools for `reports`: what quarterly, incident and project reports say.

Slots: {p} a person (full name, written each time), {team}, {company}, {pct} a percentage,
{month}, {system}, {cause}, {codename}, {goal}, {region}, {product}, {time} a clock time.
No sentence here may state a count (the counts are the report's figures) or a full name other
than through {p}.
"""

from __future__ import annotations

# fmt: off
TEAMS = ["Customer Operations", "Platform Engineering", "EMEA Sales", "Finance", "Logistics",
         "Data Services", "Retail Banking", "Field Service", "Marketing", "Supply Chain"]
REGIONS = ["the Nordics", "North America", "Southeast Asia", "the DACH region", "Latin America",
           "the UK and Ireland", "Benelux", "Australia and New Zealand"]
PRODUCTS = ["the mobile app", "the analytics dashboard", "the self-service portal",
            "the loyalty programme", "the booking engine", "the partner API"]
SYSTEMS = ["payment gateway", "login service", "order database", "email delivery pipeline",
           "search cluster", "mobile API", "inventory service", "billing batch job"]
CAUSES = ["an expired TLS certificate", "a misconfigured load balancer rule",
          "a database failover that did not complete", "a faulty deployment of the routing layer",
          "disk exhaustion on the primary node", "an incorrect DNS change",
          "a memory leak in the connection pool", "an expired API credential"]
GOALS = ["migrate the billing platform to the cloud", "launch the new customer portal",
         "replace the warehouse management system", "consolidate the regional data warehouses",
         "roll out single sign-on across all internal tools", "rebuild the checkout flow"]
ROLES = ["Head of Support", "Chief Financial Officer", "Site Reliability Engineer",
         "Project Manager", "VP of Sales", "Data Engineer", "Account Director", "QA Lead",
         "Operations Manager", "Product Owner", "Security Analyst", "HR Business Partner",
         "Engineering Manager", "Procurement Lead", "Regional Director"]
AUDIENCES = ["Executive Leadership Team", "All Staff", "Board of Directors", "Steering Committee",
             "Operations Leadership", "Engineering Department"]

# kind -> [(figure name, low, high, past tense, past participle)]
FIGURES = {
    "quarterly": [
        ("new customers", 12, 4800, "signed", "signed"),
        ("support tickets", 150, 24000, "resolved", "resolved"),
        ("customer orders", 300, 90000, "shipped", "shipped"),
        ("new hires", 2, 140, "onboarded", "onboarded"),
        ("product releases", 2, 40, "shipped", "shipped"),
        ("customer complaints", 3, 900, "received", "received"),
        ("sales meetings", 20, 2600, "held", "held"),
        ("supplier invoices", 200, 36000, "processed", "processed"),
    ],
    "incident": [
        ("affected customers", 20, 86000, "notified", "notified"),
        ("failed transactions", 40, 120000, "recorded", "recorded"),
        ("monitoring alerts", 5, 900, "received", "received"),
        ("support tickets", 10, 7000, "logged", "logged"),
        ("affected servers", 2, 300, "restarted", "restarted"),
        ("error reports", 15, 9000, "collected", "collected"),
        ("customer refunds", 5, 4000, "issued", "issued"),
    ],
    "project": [
        ("completed tasks", 20, 1400, "closed", "closed"),
        ("open defects", 3, 260, "logged", "logged"),
        ("test cases", 40, 6000, "executed", "executed"),
        ("user stories", 10, 480, "delivered", "delivered"),
        ("change requests", 2, 70, "approved", "approved"),
        ("training sessions", 2, 90, "held", "held"),
        ("migrated accounts", 100, 250000, "moved", "moved"),
    ],
}
FIGURE_FRAMES = [
    "In total, {v} {name} were {pp} during the {period}.",
    "The team {past} {v} {name} this {period}.",
    "{p} reported that {v} {name} had been {pp} by the end of the {period}.",
    "We {past} {v} {name}, {cmp} than planned.",
    "A total of {v} {name} were {pp}.",
    "By the end of the {period}, {v} {name} had been {pp}.",
    "According to {p}, {v} {name} were {pp} over the {period}.",
    "Overall {v} {name} were {pp}, which {p} described as {judgement}.",
]
COMPARISONS = ["slightly more", "somewhat fewer", "considerably more", "a little fewer"]
JUDGEMENTS = ["encouraging", "in line with expectations", "below target", "a solid result"]
PERIOD = {"quarterly": "quarter", "incident": "incident", "project": "reporting period"}

HEADLINES = {
    "quarterly": [
        "Overall, the quarter closed ahead of plan, with revenue up {pct}% on the previous "
        "quarter and costs held flat.",
        "Overall, {team} delivered a steady quarter, although growth in {region} slowed to {pct}%.",
        "In summary, demand remained strong and margins improved by {pct}% despite higher "
        "logistics costs.",
        "In short, the quarter was difficult: revenue fell {pct}% while investment in "
        "{product} continued.",
    ],
    "incident": [
        "Overall, the {system} outage was caused by {cause} and was fully resolved the same day.",
        "In summary, {cause} made the {system} unavailable for part of the day; no data was lost.",
        "In short, {cause} degraded the {system}, and recovery took longer than our targets allow.",
    ],
    "project": [
        "Overall, Project {codename} is on track to {goal} by {month}, with {pct}% of the budget "
        "spent.",
        "In summary, Project {codename} is running late, and the plan to {goal} now depends on "
        "extra testing capacity.",
        "In short, Project {codename} has finished its design phase and is ready to {goal}.",
    ],
}
TITLES = {
    "quarterly": ["{team} Quarterly Report: Q{q} {year}",
                  "Q{q} {year} Quarterly Business Review",
                  "Quarterly Operations Report, Q{q} {year}",
                  "{company} Quarterly Update Q{q} {year}"],
    "incident": ["Incident Report: {System} Outage", "Post-Incident Review: {System} Failure",
                 "Incident Report {ref}: {System} Degradation", "{System} Incident Report"],
    "project": ["Project {codename} Status Report", "Project {codename}: Monthly Project Report",
                "Status Report for Project {codename}",
                "{codename} Project Report, {month} {year}"],
}

# kind -> [(section heading, [sentences])]; the first section carries the headline.
SECTIONS = {
    "quarterly": [
        ("Executive Summary", [
            "This report summarises the performance of {team} at {company} for the quarter.",
            "It covers financial results, customers, operations and the outlook for next quarter.",
            "The quarter started slowly but picked up strongly in {month}.",
            "Several initiatives launched last quarter began to show results.",
        ]),
        ("Financial Performance", [
            "Revenue grew by {pct}% compared with the same quarter last year.",
            "Operating costs rose by {pct}%, mainly because of higher freight and energy prices.",
            "Gross margin improved as we renegotiated supplier contracts.",
            "Cash collection was strong and overdue receivables fell by {pct}%.",
            "{p} led a review of discretionary spending across all departments.",
            "Currency movements reduced reported revenue slightly.",
        ]),
        ("Sales and Customers", [
            "Demand was strongest in {region}, where the pipeline grew by {pct}%.",
            "Customer churn fell to {pct}% after the new onboarding programme.",
            "{p} and the account teams focused on renewals with our largest clients.",
            "Win rates against our main competitor improved during {month}.",
            "Feedback from customers on {product} was largely positive.",
            "Pricing changes introduced in {month} were accepted with little resistance.",
        ]),
        ("Operations", [
            "On-time delivery improved to {pct}% of shipments.",
            "The new warehouse in {region} reached full capacity in {month}.",
            "{p} coordinated the move to a single logistics provider.",
            "Stock levels were reduced without affecting service levels.",
            "Energy consumption per unit produced fell by {pct}%.",
        ]),
        ("People and Hiring", [
            "Staff turnover was {pct}%, below the industry average.",
            "{p} launched a mentoring programme for new managers.",
            "The annual engagement survey had a response rate of {pct}%.",
            "Training hours per employee increased compared with last quarter.",
            "Recruitment for senior engineering roles remains slow.",
        ]),
        ("Product and Technology", [
            "The team released improvements to {product} every two weeks.",
            "Platform availability was {pct}% for the quarter.",
            "{p} presented the updated product roadmap to the leadership team.",
            "Work on the new data platform moved into its second phase.",
            "Security testing found no critical issues.",
        ]),
        ("Customer Support", [
            "Average first response time improved by {pct}%.",
            "Satisfaction scores rose after the introduction of a callback option.",
            "{p} reorganised the support rota to cover weekends.",
            "The knowledge base was rewritten and now answers the most common questions.",
        ]),
        ("Risks and Issues", [
            "Supplier concentration in {region} remains our largest operational risk.",
            "Rising interest rates could delay customer investment decisions.",
            "{p} is tracking a regulatory change that takes effect in {month}.",
            "Dependence on a small number of large clients is being reduced.",
        ]),
        ("Outlook", [
            "We expect growth of around {pct}% next quarter.",
            "Priorities for next quarter include expanding in {region} and improving {product}.",
            "{p} will lead the planning cycle for the coming year.",
            "Budget proposals are due to the finance team by the end of {month}.",
        ]),
    ],
    "incident": [
        ("Summary", [
            "This report describes the incident affecting the {system} and the actions taken.",
            "The incident began on {incident_date} and was declared a major incident.",
            "Customers experienced errors and slow responses during the incident window.",
            "This review follows our blameless post-incident process.",
        ]),
        ("Timeline", [
            "At {time} UTC monitoring detected elevated error rates on the {system}.",
            "At {time} UTC {p} acknowledged the page and opened an incident channel.",
            "At {time} UTC the team rolled back the most recent change, without effect.",
            "At {time} UTC {p} identified {cause} as the likely trigger.",
            "At {time} UTC service was restored and error rates returned to normal.",
            "At {time} UTC the incident was closed after a period of monitoring.",
        ]),
        ("Customer Impact", [
            "Around {pct}% of requests to the {system} failed during the peak of the incident.",
            "Customers in {region} were affected most, as the incident hit their busiest hour.",
            "{p} coordinated customer communications with the support team.",
            "No customer data was lost or exposed.",
        ]),
        ("Root Cause", [
            "The root cause was {cause}.",
            "A gap in our change review process allowed the problem to reach production.",
            "{p} reproduced the failure in the staging environment.",
            "Existing alerts did not fire early enough because thresholds were set too high.",
        ]),
        ("Detection and Response", [
            "The issue was first reported by customers before our alerts fired.",
            "{p} took the role of incident commander.",
            "Escalation to the database team took longer than expected.",
            "The runbook for the {system} was out of date.",
        ]),
        ("Remediation", [
            "We have added monitoring for the condition that caused the incident.",
            "{p} is automating the renewal and validation steps.",
            "Configuration changes to the {system} now require a second reviewer.",
            "Capacity on the standby systems was increased by {pct}%.",
        ]),
        ("Action Items", [
            "Update the {system} runbook and test it in a game day exercise.",
            "{p} owns the review of alert thresholds across critical services.",
            "Add synthetic checks that exercise the full customer journey.",
            "Report progress on all actions to the reliability review in {month}.",
        ]),
        ("Lessons Learned", [
            "Clear ownership of the incident channel helped the response.",
            "Earlier communication with customers would have reduced support load.",
            "{p} noted that the dashboards hid the problem behind averages.",
            "Rollback procedures need to be practised more often.",
        ]),
    ],
    "project": [
        ("Overview", [
            "Project {codename} aims to {goal}.",
            "This report covers progress, budget, risks and next steps for the reporting period.",
            "The project is sponsored by the {team} leadership team.",
            "Go-live is planned for {month}.",
        ]),
        ("Scope and Objectives", [
            "The scope includes data migration, integration testing and user training.",
            "Out of scope are changes to the reporting layer, planned for a later phase.",
            "{p} confirmed the acceptance criteria with the business owners.",
            "The main objective is to reduce operating costs by {pct}%.",
        ]),
        ("Progress to Date", [
            "The design phase was completed and signed off in {month}.",
            "{p} led the integration work with the finance systems.",
            "Development is {pct}% complete against the baseline plan.",
            "The first pilot group started using the new system.",
        ]),
        ("Milestones", [
            "The data migration rehearsal is scheduled for {month}.",
            "User acceptance testing will start once the integration tests pass.",
            "{p} moved the cut-over milestone by two weeks to allow more testing.",
            "The steering committee approved the revised milestone plan.",
        ]),
        ("Budget", [
            "The project has spent {pct}% of its approved budget.",
            "Contractor costs were higher than planned because of additional testing.",
            "{p} is reviewing licence costs with the vendor.",
            "A contingency of {pct}% remains available.",
        ]),
        ("Team and Resourcing", [
            "Two specialists joined the team from {team}.",
            "{p} took over as workstream lead for data migration.",
            "Testing capacity remains the main constraint.",
            "The team works across three time zones, which slows some decisions.",
        ]),
        ("Risks and Issues", [
            "The largest risk is the quality of legacy data in {region}.",
            "{p} raised a concern about the vendor's release schedule.",
            "A delay in the security review could push back go-live.",
            "Key users have limited time for acceptance testing in {month}.",
        ]),
        ("Dependencies", [
            "The project depends on the network upgrade planned by {team}.",
            "{p} is the contact for the identity provider integration.",
            "Vendor support for the old system ends in {month}.",
        ]),
        ("Next Steps", [
            "Complete the migration rehearsal and review the results.",
            "{p} will present the go-live readiness assessment to the steering committee.",
            "Finalise the training plan for all user groups.",
            "Confirm the hypercare support model with {team}.",
        ]),
    ],
}
GENERIC = [
    "These results should be read together with the detailed figures in the appendix.",
    "The team will continue to monitor this closely over the coming weeks.",
    "Further detail is available from the relevant workstream leads on request.",
    "Progress here was broadly in line with the plan agreed at the start of the year.",
    "This area will be a focus of the next review.",
    "Feedback from stakeholders has been incorporated where possible.",
    "We will report on this again in the next update.",
    "The numbers in this section are provisional and may change slightly after audit.",
    "Lessons from this work will be shared with other teams.",
    "Where targets were missed, recovery plans are already in place.",
]
PERSON_LINES = ["{p} provided input for this section.",
                "Questions about this section can be directed to {p}."]
GENERIC += PERSON_LINES
# fmt: on

# Sentences built from an optional opener and a clause, for the bulk of each section.
OPENERS = [
    "In {month},",
    "During the period,",
    "As planned,",
    "Compared with last year,",
    "At the same time,",
    "Separately,",
    "As a result,",
    "In addition,",
    "Following the last review,",
    "Across {region},",
]
CLAUSES = {
    "quarterly": [
        "the finance team closed the books two days earlier than before",
        "the pricing committee approved a simplified discount structure",
        "marketing spend shifted towards digital channels",
        "the partner programme attracted interest from resellers in {region}",
        "service levels held steady despite seasonal peaks",
        "the procurement team consolidated several smaller suppliers",
        "average order value rose by {pct}%",
        "the company opened a small office to support growth in {region}",
        "utilisation of the field teams improved by {pct}%",
        "the board approved additional investment in {product}",
        "renewal rates among enterprise clients stayed high",
        "we retired several legacy reports that were no longer used",
        "travel costs were reduced by {pct}%",
        "the sales team adopted a new qualification method",
    ],
    "incident": [
        "the on-call engineer followed the escalation policy",
        "the status page was updated at regular intervals",
        "traffic was shifted to the secondary region to reduce the impact",
        "the database team verified that replication was healthy",
        "error budgets for the {system} were exhausted for the month",
        "latency on dependent services rose by {pct}%",
        "the deployment pipeline was paused to avoid further changes",
        "support agents used a prepared message to answer customer questions",
        "the team confirmed that backups were intact",
        "engineers compared configuration snapshots from before and after the change",
        "automatic retries increased load on the {system} by {pct}%",
        "the incident channel was kept open for follow-up questions",
    ],
    "project": [
        "the vendor delivered the latest build for testing",
        "the steering committee reviewed the risk register",
        "workshops with business users clarified the remaining requirements",
        "the test environment was refreshed with anonymised production data",
        "the architecture board approved the integration design",
        "documentation for the new processes was drafted",
        "the cut-over plan was walked through with all teams",
        "the project reduced its reliance on external contractors",
        "performance tests showed response times improving by {pct}%",
        "the training materials were translated for users in {region}",
        "the data quality checks found fewer issues than expected",
        "the project board agreed to defer two low-priority features",
    ],
}
GENERIC += [
    "The detailed analysis behind these points is kept in the shared project folder.",
    "Risks and mitigations are reviewed every month with the accountable owners.",
    "Not all of the planned work could be completed, and the remainder has been rescheduled.",
    "The approach has been agreed with the relevant stakeholders.",
    "Communication with the wider organisation will continue through the usual channels.",
    "Some of the underlying data is still being validated.",
    "The trend is expected to continue into the next period.",
    "No significant changes to the plan are proposed at this stage.",
    "Dependencies on other teams were managed through the weekly coordination meeting.",
    "Costs in this area remained within the agreed budget.",
    "The results compare favourably with the same period last year.",
    "Further improvements are possible, but they require additional investment.",
    "Decisions taken in this area are recorded in the decision log.",
]

# Activity sentences: subject + action + thing + tail, thousands of plain combinations.
SUBJECTS = [
    "The {team} team",
    "Our colleagues in {region}",
    "The leadership group",
    "The operations desk",
    "Management",
    "The central planning team",
    "Regional managers",
    "The analytics group",
    "The governance board",
    "A small working group",
]
ACTIONS = [
    "reviewed the {thing}",
    "updated the {thing}",
    "completed work on the {thing}",
    "started a review of the {thing}",
    "agreed changes to the {thing}",
    "presented the {thing} to the steering group",
    "simplified the {thing}",
    "documented the {thing}",
    "tested a new version of the {thing}",
    "collected feedback on the {thing}",
]
THINGS = [
    "forecasting process",
    "supplier scorecard",
    "onboarding checklist",
    "reporting calendar",
    "escalation matrix",
    "capacity plan",
    "quality framework",
    "service catalogue",
    "budget template",
    "vendor management process",
    "training curriculum",
    "risk register",
    "data retention policy",
    "release calendar",
    "customer feedback process",
    "handover procedure",
    "access review process",
    "cost allocation model",
]
TAILS = [
    "",
    " in {month}",
    " ahead of schedule",
    " after feedback from {region}",
    " as part of the annual plan",
    " with support from {team}",
    " later than planned",
    " for the second time this year",
]
