"""Vocabulary for `business`: names, goods and services, label wordings, boilerplate.

Label wordings and value formats are shared by train and held-out templates: the split is by
layout, so a held-out document uses words the model has seen, arranged in a way it has not.
"""

from __future__ import annotations

_W = str.split
PREFIXES = _W(
    "Northwind Bluepeak Silverline Redwood Ironbridge Brightwater Oakridge Summit Harbor Crescent "
    "Evergreen Pinecrest Lakeside Granite Copperfield Westgate Falcon Meridian Horizon Juniper "
    "Cobalt Sterling Aurora Beacon Cedar Maple Orchid Quartz Riverside Stonegate Tidewater Vantage "
    "Willow Zenith Alder Birchwood Coral Ember Fjord Glacier Hawthorn Indigo Kestrel Mosaic Nimbus "
    "Onyx Prairie Saffron Tamarack Ashford Bramble Clearwater Driftwood Elmstead Foxglove Highgate"
)
SURNAMES = _W(
    "Smith Okafor Nakamura Fischer Kowalski Haddad Moreau Rossi Jensen Novak Silva Patel Nguyen "
    "Schmidt Dubois Larsen Garcia Müller Johansson Kim Chen Williams Brennan Costa Ivanova Mensah "
    "Sato Hughes Bauer Lindqvist Castillo Adeyemi Horvath Kaur Reyes Tanaka Walsh Petrov Almeida "
    "Fontaine Osei Yilmaz Kruger Ahmed Romero Eriksen Sokolov Banerjee Whitfield Achebe Lombardi"
)
FIRST_NAMES = _W(
    "Anna James Priya Tomasz Chloe Kenji Fatima Lucas Sofia Daniel Amara Mateo Elena Oliver Mei "
    "Noah Aisha Lars Isabel Ravi Hannah Diego Yuki Grace Omar Julia Felix Nadia Samuel Ingrid Leo "
    "Zara Pedro Helen Kwame Marta Victor Lena Arjun Claire Tobias Rosa Ibrahim Emma Hugo Leila"
)
BIZ_SUFFIXES = _W("Ltd LLC Inc. GmbH B.V. AG plc Limited S.A. AB Oy SARL Pty.Ltd") + ["& Co."] * 2
# fmt: off
INDUSTRIES: dict[str, tuple[list[str], list[tuple[str, int, int, int]]]] = {
    "consulting": (
        ["Consulting", "Advisory", "Partners", "Strategy Group"],
        [("Strategy workshop", 900, 4000, 2), ("Consulting hours", 90, 250, 40),
         ("Market analysis report", 1200, 6000, 1), ("Travel expenses", 80, 900, 1),
         ("Stakeholder interviews", 150, 400, 12), ("Project management", 500, 3000, 1)],
    ),
    "it": (
        ["IT Services", "Software", "Systems", "Cloud Solutions", "Tech"],
        [("Cloud hosting (monthly)", 60, 900, 3), ("Software license, annual", 200, 4000, 10),
         ("Support hours", 70, 180, 30), ("Laptop repair", 90, 400, 3),
         ("SSL certificate renewal", 40, 300, 2), ("Network installation", 500, 3500, 1)],
    ),
    "logistics": (
        ["Logistics", "Freight", "Transport", "Shipping"],
        [("Pallet storage (per week)", 8, 30, 60), ("Freight charge", 300, 4000, 3),
         ("Customs clearance fee", 60, 400, 2), ("Fuel surcharge", 20, 300, 1),
         ("Express courier", 25, 120, 10), ("Warehouse handling", 40, 600, 5)],
    ),
    "design": (
        ["Design Studio", "Creative", "Media", "Studio"],
        [("Logo design", 400, 2500, 1), ("Brand guidelines", 800, 4000, 1),
         ("Website mockups", 600, 3000, 1), ("Photography session", 250, 1500, 2),
         ("Illustration", 120, 600, 6), ("Print layout", 150, 900, 3)],
    ),
    "supplies": (
        ["Office Supplies", "Supplies", "Wholesale", "Trading"],
        [("A4 copy paper (box)", 20, 45, 20), ("Toner cartridge", 45, 160, 8),
         ("Ergonomic desk chair", 150, 600, 6), ("Whiteboard markers (pack)", 6, 18, 15),
         ("Filing cabinet", 120, 450, 3), ("Notebooks (pack of 10)", 12, 35, 10)],
    ),
    "catering": (
        ["Catering", "Kitchen", "Events", "Foods"],
        [("Lunch buffet", 200, 1500, 3), ("Coffee service", 40, 200, 5),
         ("Canapés (per tray)", 35, 90, 12), ("Event staff (hours)", 25, 45, 24),
         ("Delivery fee", 15, 80, 1), ("Beverage package", 100, 800, 2)],
    ),
    "construction": (
        ["Builders", "Construction", "Contractors", "Engineering"],
        [("Labour (hours)", 35, 95, 60), ("Building materials", 300, 6000, 1),
         ("Equipment rental", 120, 900, 5), ("Site cleanup", 150, 800, 1),
         ("Electrical work", 400, 3000, 1), ("Plumbing repairs", 150, 1200, 2)],
    ),
}
STORES: dict[str, tuple[list[str], list[tuple[str, int, int, int]]]] = {
    "grocery": (
        ["Market", "Grocers", "Food Hall", "Fresh Market", "Supermarket"],
        [("Milk 1L", 1, 3, 3), ("Sourdough bread", 3, 6, 2), ("Bananas", 1, 3, 2),
         ("Free-range eggs 12pk", 3, 7, 2), ("Coffee beans 500g", 8, 16, 2),
         ("Cheddar cheese", 4, 9, 2), ("Olive oil 750ml", 6, 14, 1), ("Tomatoes", 2, 5, 3)],
    ),
    "cafe": (
        ["Coffee House", "Café", "Espresso Bar", "Bakery"],
        [("Latte", 3, 6, 3), ("Americano", 2, 5, 3), ("Croissant", 2, 5, 3),
         ("Blueberry muffin", 2, 5, 2), ("Chai tea", 3, 5, 2), ("Avocado toast", 7, 13, 2)],
    ),
    "hardware": (
        ["Hardware", "Home & Garden", "DIY Centre", "Tool Supply"],
        [("Wood screws 100pk", 4, 11, 3), ("Interior paint 5L", 25, 70, 2),
         ("Drill bit set", 12, 40, 1), ("Garden hose 20m", 18, 45, 1), ("LED bulb 4pk", 8, 22, 3),
         ("Sandpaper assortment", 5, 14, 2)],
    ),
    "pharmacy": (
        ["Pharmacy", "Chemist", "Drugstore", "Health"],
        [("Vitamin C tablets", 5, 15, 2), ("Sunscreen SPF50", 8, 20, 1), ("Toothpaste", 2, 6, 3),
         ("Hand cream", 4, 12, 2), ("Plasters 40pk", 3, 8, 2)],
    ),
    "restaurant": (
        ["Bistro", "Kitchen", "Trattoria", "Grill", "Brasserie"],
        [("Margherita pizza", 9, 16, 2), ("Caesar salad", 8, 14, 2), ("Sparkling water", 2, 5, 3),
         ("Grilled salmon", 16, 30, 2), ("House red wine (glass)", 6, 12, 3),
         ("Tiramisu", 5, 9, 2), ("Espresso", 2, 4, 3), ("Steak frites", 18, 34, 2)],
    ),
    "books": (
        ["Books", "Bookshop", "Booksellers", "Reading Room"],
        [("Paperback novel", 8, 18, 3), ("Hardcover atlas", 25, 60, 1), ("Notebook", 4, 12, 2),
         ("Gift card", 10, 50, 1), ("Children's picture book", 6, 15, 2)],
    ),
    "ride": (
        ["Rides", "Cabs", "Taxi", "Mobility", "Cars"],
        [("Fare", 5, 60, 1)],
    ),
}
PROFILE_ONLY = {"restaurant", "ride"}  # stores that only their own templates draw
CITIES = [
    ("Berlin", "10115", "Germany"), ("Austin, TX", "78701", "USA"), ("Leeds", "LS1 4DY", "UK"),
    ("Lyon", "69002", "France"), ("Toronto, ON", "M5V 2T6", "Canada"),
    ("Melbourne VIC", "3000", "Australia"), ("Zürich", "8001", "Switzerland"),
    ("Osaka", "530-0001", "Japan"), ("Gothenburg", "411 04", "Sweden"), ("Pune", "411001", "India"),
    ("Denver, CO", "80202", "USA"), ("Rotterdam", "3011 AB", "Netherlands"),
    ("Dublin", "D02 X285", "Ireland"),
]
# fmt: on
STREETS = _W("Market Station Mill Harbour Church Elm Park Bridge King Victoria Oak River High")
STREET_KINDS = _W("Street Road Avenue Lane Way Place")

# fmt: off
LABELS: dict[str, list[str]] = {
    "inv_no": ["Invoice No.", "Invoice No", "Invoice #", "Inv #", "Inv. No.", "Invoice Number",
               "Bill number", "Bill No.", "Invoice ID", "Invoice Ref", "Document No."],
    "inv_date": ["Invoice Date", "Date", "Date of Issue", "Issue Date", "Issued", "Billing Date",
                 "Inv. Date", "Invoice Dated"],
    "due": ["Due Date", "Payment Due", "Due", "Pay By", "Payment Due Date", "Due On",
            "Please pay by", "Payable by"],
    "total": ["Total", "Total Due", "Amount Due", "Grand Total", "Total Amount", "Invoice Total",
              "Balance Due", "Total Payable", "Amount Payable", "Total (incl. tax)"],
    "subtotal": ["Subtotal", "Sub-total", "Net Amount", "Net Total", "Total before tax"],
    "tax": ["Tax", "VAT", "Sales Tax", "GST"],
    "shipping": ["Shipping", "Delivery", "Freight", "Shipping & Handling"],
    "discount": ["Discount", "Less discount", "Promo discount"],
    "bill_to": ["Bill To", "Billed To", "Customer", "Client", "Sold To", "Invoice To"],
    "ship_to": ["Ship To", "Deliver To", "Delivery Address"],
    "po": ["PO Number", "PO #", "Purchase Order", "Your Ref.", "Order Ref"],
    "cust_id": ["Customer ID", "Account No.", "Client Code", "Customer No."],
    "vendor": ["From", "Supplier", "Vendor", "Seller", "Issued By", "Billed By"],
    "terms": ["Terms", "Payment Terms"],
    "rcp_no": ["Receipt No.", "Receipt #", "Trans #", "Transaction ID", "Ref", "Receipt Number",
               "Txn No.", "Ticket"],
    "rcp_date": ["Date", "Date/Time", "Purchase Date", "Paid On", "Transaction Date"],
    "rcp_total": ["TOTAL", "Total", "Amount Paid", "Total Paid", "Total Charged"],
    "rcp_customer": ["Customer", "Member", "Guest", "Card Holder", "Name"],
    "con_no": ["Contract No.", "Agreement No.", "Contract ID", "Ref.", "Agreement Number",
               "Contract #", "Reference No."],
    "con_start": ["Effective Date", "Start Date", "Commencement Date", "Term Start",
                  "Date of Agreement"],
    "con_end": ["End Date", "Expiration Date", "Expiry Date", "Term End", "Termination Date",
                "Valid Until"],
    "con_value": ["Total Contract Value", "Contract Value", "Total Fees", "Total Consideration",
                  "Total Price", "Total Value"],
    "provider": ["Provider", "Supplier", "Contractor", "Consultant", "Service Provider", "Vendor"],
    "client": ["Client", "Customer", "Company", "Buyer", "Purchaser"],
}
# fmt: on
SEPARATORS = [": ", ": ", ":  ", " : ", ":\t", " - ", ": "]


BOILERPLATE = {
    "invoice": [
        "Please include the invoice number as the reference with your payment.",
        "Thank you for your business.",
        "We appreciate your prompt payment.",
        "Questions about this invoice? Contact our accounts team at accounts@{domain}.",
        "You can also reach us by phone on {phone} during office hours.",
        "All services were performed in accordance with the agreed scope of work.",
        "Goods remain the property of the seller until paid in full.",
        "This invoice was generated electronically and is valid without a signature.",
        "Any disputes regarding this invoice must be raised within fourteen days of receipt.",
        "We accept bank transfer and major credit cards.",
        "Cheques are no longer accepted.",
        "Late payments may be charged interest at the statutory rate plus administrative costs.",
        "Please note that our bank details have not changed.",
        "Beware of fraudulent emails asking you to pay into a different account.",
        "Bank: First Commercial Bank, account name {vendor}, IBAN on request.",
        "Your account manager is {contact}.",
        "We look forward to working with you again.",
        "Prices are quoted exclusive of tax unless stated otherwise.",
        "Remittance advice can be sent to remittance@{domain}.",
        "Work outside the agreed scope will be quoted separately.",
        "Kindly notify us of any change to your billing address.",
        "A copy of this invoice is available in the customer portal.",
        "Payment by card may incur a small processing fee.",
        "Small orders below the minimum value carry a handling charge.",
        "Registered in England and Wales. VAT registration {vat}.",
        "Thank you for choosing {vendor}!",
    ],
    "receipt": [
        "Returns accepted within thirty days with the original receipt.",
        "Thank you for shopping with us!",
        "Please come again.",
        "Tell us how we did and get a discount on your next visit.",
        "Visit our website and enter the code printed below.",
        "Keep this receipt for your records.",
        "Exchanges only with proof of purchase.",
        "Members earn points on every purchase.",
        "Ask our staff about the loyalty programme.",
        "Opening hours: Monday to Saturday 8am to 8pm, Sunday 10am to 4pm.",
        "Prices include all applicable taxes unless stated otherwise.",
        "Customer service: {phone}.",
        "Follow us online for weekly offers.",
        "Card payments are processed securely.",
        "No card data is stored on this device.",
        "Please check your change before leaving the counter.",
        "Gift cards cannot be exchanged for cash.",
        "Sale items are not eligible for refund.",
        "Free wifi for customers, ask at the counter for the password.",
        "We are hiring! Ask in store for details.",
        "Reusable bags are available at the checkout.",
        "VAT registration {vat}.",
    ],
    "ride": [
        "Fares include applicable taxes and fees.",
        "Lost something? Contact your driver through the app within 24 hours.",
        "Rate your trip to help us improve.",
        "Tips go entirely to your driver.",
        "Need help with a charge? Visit help.{domain}.",
        "This trip was paid with the card on file.",
        "Invite a friend and you both get a discount on your next ride.",
        "Your safety matters: share your trip status with friends and family.",
        "Business profile: receipts can be exported to your expense tool.",
        "Customer support: {phone}.",
    ],
    "letter": [
        "We value our partnership and look forward to another productive term together.",
        "All other terms and conditions of the agreement remain unchanged.",
        "Please sign and return a copy of this letter for our records.",
        "If you have any questions, please contact your account manager, {contact}.",
        "You can reach our contracts team at contracts@{domain} or on {phone}.",
        "Thank you for your continued trust in {vendor}.",
        "This letter forms part of the agreement referenced above.",
        "Service levels will continue as described in the original agreement.",
    ],
    "contract": [
        "Confidentiality. Each party shall keep confidential all information received from the "
        "other party and shall not disclose it to any third party without prior written consent.",
        "Limitation of Liability. Neither party shall be liable for any indirect or consequential "
        "loss arising out of or in connection with this Agreement.",
        "Governing Law. This Agreement shall be governed by the laws of the jurisdiction in which "
        "the Provider has its registered office.",
        "Termination. Either party may terminate this Agreement for material breach if the breach "
        "is not remedied within thirty days of written notice.",
        "Entire Agreement. This Agreement constitutes the entire agreement between the parties and "
        "supersedes all prior discussions and understandings.",
        "Assignment. Neither party may assign its rights under this Agreement without the written "
        "consent of the other party, which shall not be unreasonably withheld.",
        "Notices. All notices must be in writing and delivered by hand, courier or email to the "
        "addresses set out above.",
        "Force Majeure. Neither party shall be responsible for delays caused by events beyond its "
        "reasonable control.",
        "Data Protection. Both parties shall comply with applicable data protection laws when "
        "processing personal data under this Agreement.",
        "Warranties. Services will be performed with reasonable skill and care by suitably "
        "qualified personnel.",
        "Intellectual Property. Deliverables become the property of the Client upon payment in "
        "full, excluding pre-existing materials of the Provider.",
        "Insurance. The Provider shall maintain professional liability insurance for the duration "
        "of this Agreement.",
        "Subcontracting. The Provider may use subcontractors only with the prior approval of the "
        "Client.",
        "Amendments. Any change to this Agreement must be agreed in writing by both parties.",
    ],
}
NOISE_LINES = [
    "Page 1 of 1",
    "www.{domain}",
    "VAT Reg. No. {vat}",
    "Company No. {company_no}",
    "-----------------------------",
    "ORIGINAL",
    "Customer copy",
    "Tel. {phone}",
    "Please retain for your records",
    "{vendor_address[0]}",
]
