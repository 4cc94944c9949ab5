"""A labelled corpus for P-CONTENT: prohibited mail, and legitimate mail that looks close.

Written for these tests: each entry is (name, category or None, subject, body). The hard
negatives are the point: a pharmacy's order notice, a bank warning about crypto scams, a
news digest about a lottery winner, a hospital newsletter, a job offer for remote work.
"""

PROHIBITED: list[tuple[str, str, str, str]] = [
    ("dating-01", "dating", "Hot singles near you tonight",
     "Lonely? Meet local women who want to chat. Hot singles are waiting, adult dating "
     "made easy. Sign up free."),
    ("dating-02", "dating", "Discreet company in your city",
     "Our escort service offers verified escorts in 40 cities. Book a hookup tonight."),
    ("drugs-01", "drugs", "Cheap meds, no prescription needed",
     "Buy Viagra and Cialis at our online pharmacy. No prescription needed, discreet "
     "shipping worldwide."),
    ("drugs-02", "drugs", "Pain relief delivered",
     "Order tramadol and oxycodone without a prescription. Generic pills at 80% off."),
    ("get_rich-01", "get_rich", "Earn $500 a day from your kitchen table",
     "Work from home and earn $500 a day. No experience needed. Be your own boss and "
     "reach financial freedom this month."),
    ("get_rich-02", "get_rich", "The system banks hate",
     "Get rich quick with our guaranteed income system. Quit your job in 30 days."),
    ("stock_tips-01", "stock_tips", "STOCK ALERT: this one is about to explode",
     "Hot stock pick. Ticker: QXRT. This penny stock is about to explode, buy now before "
     "the announcement."),
    ("stock_tips-02", "stock_tips", "Insider tip for Monday",
     "An insider tip from our analysts: guaranteed returns on symbol: ZNTH before Friday."),
    ("mlm-01", "mlm", "Join my team and build your downline",
     "Network marketing changed my life. Build your downline, recruit your friends and "
     "enjoy residual income."),
    ("affiliate-01", "affiliate", "Make money sharing links",
     "Join our affiliate program: commission only, promote our products and earn "
     "commissions on every sale through your affiliate link."),
    ("debt-01", "debt", "Wipe out your debt in 90 days",
     "Debt relief for everyone. Consolidate your debt, stop creditors calling and wipe "
     "out your debt with our debt settlement plan. Bad credit OK."),
    ("debt-02", "debt", "Final notice of collection",
     "This is a final notice of collection from a collection agency regarding account 4471."),
    ("supplements-01", "supplements", "Lose 30 pounds without diet or exercise",
     "Our fat burner will melt fat fast. Lose 30 pounds without diet or exercise. "
     "Doctors hate this miracle cure."),
    ("supplements-02", "supplements", "The herbal formula that cures cancer",
     "Our detox tea cures cancer and will boost testosterone, clinically proven."),
    ("list_brokering-01", "list_brokering", "Email list for sale",
     "Buy email lists today: 5 million email addresses, verified email leads, targeted "
     "mailing list by industry."),
    ("list_brokering-02", "list_brokering", "Rent our list of CFOs",
     "Rent our list of 80,000 finance decision makers. B2B leads refreshed monthly. "
     "Email list for sale or rent."),
    ("piracy-01", "piracy", "Photo editor full version free",
     "Download the cracked full version free with keygen and serial key included."),
    ("piracy-02", "piracy", "Luxury for less",
     "Replica watches and replica handbags, indistinguishable from the originals."),
    ("crypto-01", "crypto", "Token sale ends Friday",
     "Our token sale is live: presale price 0.01, 100x returns expected. Connect your "
     "wallet and join the airdrop. Ethereum accepted."),
    ("crypto-02", "crypto", "The next Bitcoin",
     "Initial coin offering open now. This crypto is going to the moon."),
    ("gambling-01", "gambling", "200 free spins waiting",
     "Claim your casino bonus: 200 free spins and a 100% deposit bonus at our online casino."),
    ("gambling-02", "gambling", "You have won!",
     "Congratulations, you have won the jackpot. Claim your prize now and place your bet "
     "on tonight's match."),
    ("tobacco-01", "tobacco", "New e-liquid flavours",
     "Twenty new e-liquid flavours and disposable pods. Vape shop now open online."),
    ("tobacco-02", "tobacco", "Nicotine pouches, 3 for 2",
     "Nicotine pouches and premium cigars delivered to your door. Vaping starter kits too."),
]  # fmt: skip

LEGITIMATE: list[tuple[str, str, str]] = [
    ("pharmacy-receipt", "Your order 88231",
     "Thank you for your order at Green Cross Pharmacy. Your prescription is ready for "
     "pickup at our Main Street branch. Please bring your ID."),
    ("bank-security", "Protect yourself from investment scams",
     "We see more crypto scams: fraudsters promise 10x gains on Bitcoin. We will never ask "
     "for your PIN or to connect your wallet. Report any scam to our fraud team."),
    ("news-lottery", "Your morning briefing",
     "A retired teacher in Leeds is this year's biggest lottery winner, according to the "
     "operator. Markets closed higher; the council approved the new library."),
    ("news-markets", "Markets this week",
     "Shares rose 2% this week as inflation eased. Analysts expect the central bank to "
     "hold rates. Read our explainer on bond yields."),
    ("hospital-newsletter", "Flu vaccination clinics open",
     "St Mary's Hospital runs flu vaccination clinics every Saturday in November. Speak to "
     "your doctor about the vaccine if you are over 65."),
    ("vitamins-receipt", "Order confirmed: Vitamin D3 1000 IU",
     "Your order of Vitamin D3 1000 IU, 90 tablets, has shipped. Delivery expected Thursday."),
    ("recruiter", "Senior developer role, remote",
     "We are hiring a senior developer. The role is fully remote: you can work from home "
     "anywhere in the EU. Salary 70,000 EUR plus pension."),
    ("dating-app-reset", "Reset your password",
     "Someone asked to reset the password of your account. If it was you, use the link "
     "below. If not, ignore this message."),
    ("library", "New at the library this month",
     "Twelve new novels, a children's reading hour on Saturdays and a talk on local "
     "history. Borrow e-books with your library card."),
    ("finance-blog", "How I paid off my student loan",
     "In this post I explain how budgeting and overpaying a little each month helped me "
     "become debt-free in four years. No tricks, just a spreadsheet."),
    ("accountant-invoice", "Invoice 2026-114",
     "Please find attached our invoice for the annual accounts. Payment is due within 30 "
     "days to the account below."),
    ("quit-smoking", "Week 3 of your quit plan",
     "You have not smoked for 21 days. Cravings for cigarettes fade after the first month. "
     "Keep going, your quit smoking coach is here to help."),
    ("casino-hotel", "Your stay in Monte Carlo",
     "Your room at the Hotel de Paris is confirmed for 12 to 14 December. Breakfast is "
     "served from 7 am."),
    ("software-licence", "Your licence key",
     "Thank you for buying Photo Studio. Your licence key is below; enter it in Settings > "
     "Licence to activate the product."),
    ("wine-shop", "Autumn wine selection",
     "Our autumn selection is here: six red wines from the Rhône, tasting notes included. "
     "Free delivery above 80 euros."),
    ("gym", "New yoga classes",
     "From Monday we offer three new yoga classes. Book your spot in the app."),
    ("airline", "Your boarding pass",
     "Flight LH 2021 to Munich departs at 07:40 from gate B12. Boarding closes 20 minutes "
     "before departure."),
    ("charity", "Thank you for your donation",
     "Your donation of 25 euros helps us plant 50 trees. A receipt for your tax return is "
     "attached."),
    ("school", "Parents' evening on Thursday",
     "Parents' evening is on Thursday from 5 pm. Please book a slot with each teacher."),
    ("utility-bill", "Your electricity bill",
     "Your bill for October is 84.20 euros and will be collected by direct debit on the "
     "5th."),
    ("insurance", "Your policy renewal",
     "Your home insurance renews on 1 January. The premium stays the same. No action "
     "needed."),
    ("bookshop-newsletter", "Books of the month",
     "This month we recommend a novel about a chess prodigy, a history of the Silk Road "
     "and a cookbook of Persian dishes."),
    ("conference", "Your conference ticket",
     "Your ticket for PyCon is attached. Doors open at 8:30; bring your badge."),
    ("car-service", "Your car is due for service",
     "Your car is due for its annual service. Book online or call our garage."),
    ("bank-statement", "Your statement is ready",
     "Your monthly statement is ready in online banking. Log in to view it."),
    ("ngo-news", "Our work in 2026",
     "This year our volunteers repaired 40 wells and trained 300 nurses. Read the report."),
    ("developer-news", "Release 4.2 is out",
     "Version 4.2 adds dark mode and fixes 31 bugs. Update from the app store."),
    ("museum", "Exhibition opening",
     "Join us for the opening of our new exhibition on Bauhaus design, Friday at 6 pm."),
    ("sports-club", "Match report",
     "Our under-12s won 3-1 on Saturday. Training continues Tuesdays at 5 pm."),
    ("tax-office", "Your tax return was received",
     "We received your tax return for 2025. You will hear from us within eight weeks."),
    ("brokerage-statement", "Your quarterly portfolio report",
     "Your portfolio returned 3.1% this quarter. Past performance is no guarantee of "
     "future results. Your adviser is available for questions."),
    ("pet-shop", "Your dog food subscription",
     "Your next delivery of dog food ships on Monday. Change the date in your account."),
    ("cinema", "Tickets for Saturday",
     "Your two tickets for Saturday 8 pm, screen 3, seats F7 and F8."),
    ("coworking", "Your desk booking",
     "Your desk at the coworking space is booked for next week. Coffee is on us."),
    ("university", "Enrolment confirmed",
     "Your enrolment in Introduction to Statistics is confirmed. Lectures start 6 October."),
    ("dentist", "Appointment reminder",
     "Reminder: your dental check-up is on Tuesday at 10:15. Reply to reschedule."),
    ("travel-agency", "Your trip to Lisbon",
     "Your itinerary for Lisbon is attached, with hotel and museum tickets."),
    ("energy-advice", "Save energy this winter",
     "Five tips to lower your heating bill: seal windows, lower the thermostat one degree."),
    ("job-alert", "New jobs matching your search",
     "Three new nursing jobs in Bristol match your saved search. Apply in one click."),
    ("crypto-exchange-security", "New login to your account",
     "A new login to your exchange account from Berlin. If this was not you, reset your "
     "password. We never ask for your seed phrase."),
    ("lottery-charity", "Results of our charity raffle",
     "Thanks to everyone who bought a raffle ticket at the school fair. The winning "
     "numbers are on the notice board."),
]  # fmt: skip
